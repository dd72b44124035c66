//! `apply` against hostile commands and bytes: it never panics, refuses
//! what validation refuses (changing nothing), keeps every invariant when
//! it applies, and agrees with a plain reference (clone, change, check the
//! whole spec) on what applies and what the spec becomes.

mod hostile;

use proptest::prelude::*;
use raftlb_config::state::check;
use raftlb_config::{ClusterSpec, ClusterState, Command, Outcome, StickyTables, validate};

const EXAMPLE: &str = include_str!("../../node/examples/raftlb.toml");

/// The example config's cluster, bootstrapped; or nothing at all.
fn start(bootstrapped: bool) -> ClusterState {
    let mut state = ClusterState::default();
    if bootstrapped {
        let config = raftlb_config::parse("raftlb.toml", EXAMPLE).expect("the example is valid");
        assert_eq!(state.apply(Command::Bootstrap(config.cluster)), Outcome::Applied);
    }
    state
}

/// What holds after every command: the invariants, and every listener and
/// pool valid.
fn assert_sound(state: &ClusterState) {
    let spec = state.spec();
    check(spec).expect("the state keeps its invariants");
    for listener in &spec.listeners {
        validate::listener(listener).expect("every listener is valid");
    }
    for pool in &spec.pools {
        validate::pool(pool).expect("every pool is valid");
    }
}

/// Applies `command` and checks the validation contract; returns the outcome.
fn apply_checked(state: &mut ClusterState, tables: &StickyTables, command: &Command) -> Outcome {
    let before = state.clone();
    let outcome = state.apply_with(command.clone(), tables);
    refused_as_validated(command, &outcome);
    if matches!(outcome, Outcome::Rejected(_)) {
        assert_eq!(*state, before, "a rejected command changes nothing");
    }
    assert_sound(state);
    outcome
}

/// A command validation refuses is rejected with validation's reason; in
/// an `Independent` group (once its shape passed) each command on its own.
fn refused_as_validated(command: &Command, outcome: &Outcome) {
    match (command, outcome) {
        (Command::Independent(commands), Outcome::Each(each)) => {
            assert_eq!(each.len(), commands.len());
            for (c, o) in commands.iter().zip(each) {
                refused_as_validated(c, o);
            }
        }
        _ => {
            if let Err(invalid) = command.validate() {
                assert_eq!(outcome, &Outcome::Rejected(invalid.0));
            }
        }
    }
}

/// The spec and `bootstrapped` flag as the plain reference keeps them.
#[derive(Debug, Clone, PartialEq)]
struct Reference {
    spec: ClusterSpec,
    bootstrapped: bool,
}

impl Reference {
    /// Applies a listener, pool or backend command (or a batch) the plain
    /// way; `None` for the other commands, whose outcome it does not model.
    fn apply(&mut self, command: &Command) -> Option<bool> {
        if !touches_spec(command) {
            return None;
        }
        let mut next = self.spec.clone();
        let applied = command.validate().is_ok()
            && change(&mut next, command).is_some_and(|boots| !(boots && self.bootstrapped))
            && check(&next).is_ok();
        if applied {
            self.bootstrapped |= bootstraps(command);
            self.spec = next;
        }
        Some(applied)
    }
}

fn touches_spec(command: &Command) -> bool {
    !matches!(
        command,
        Command::Independent(_)
            | Command::AssignVip { .. }
            | Command::Sticky(_)
            | Command::SetStickySecret(_)
            | Command::PutCertificate { .. }
            | Command::RemoveCertificate { .. }
            | Command::ReportHealth { .. }
    )
}

fn bootstraps(command: &Command) -> bool {
    match command {
        Command::Bootstrap(_) => true,
        Command::Batch(commands) => commands.iter().any(bootstraps),
        _ => false,
    }
}

/// The change alone, no invariant checked; `Some(bootstraps)` if it could be made.
fn change(spec: &mut ClusterSpec, command: &Command) -> Option<bool> {
    let pool = |spec: &mut ClusterSpec, name: &str| spec.pools.iter().position(|p| p.name == name);
    let listener = |spec: &ClusterSpec, name: &str| spec.listeners.iter().position(|l| l.name == name);
    match command {
        Command::Bootstrap(seed) => {
            (spec.listeners.is_empty() && spec.pools.is_empty()).then_some(())?;
            *spec = seed.clone();
            return Some(true);
        }
        Command::AddListener(l) => {
            listener(spec, &l.name).is_none().then_some(())?;
            spec.listeners.push(l.clone());
        }
        Command::UpdateListener(l) => {
            let i = listener(spec, &l.name)?;
            spec.listeners[i] = l.clone();
        }
        Command::RemoveListener { name } => {
            spec.listeners.remove(listener(spec, name)?);
        }
        Command::AddPool(p) => {
            pool(spec, &p.name).is_none().then_some(())?;
            spec.pools.push(p.clone());
        }
        Command::UpdatePool(p) => {
            let i = pool(spec, &p.name)?;
            spec.pools[i] = p.clone();
        }
        Command::RemovePool { name } => {
            let i = pool(spec, name)?;
            spec.pools.remove(i);
        }
        Command::AddBackend { pool: name, backend } => {
            let i = pool(spec, name)?;
            let backends = &mut spec.pools[i].backends;
            backends
                .iter()
                .all(|b| b.address != backend.address)
                .then_some(())?;
            backends.push(backend.clone());
        }
        Command::RemoveBackend { pool: name, address }
        | Command::SetWeight {
            pool: name, address, ..
        }
        | Command::SetAdminState {
            pool: name, address, ..
        } => {
            let i = pool(spec, name)?;
            let backends = &mut spec.pools[i].backends;
            let at = backends.iter().position(|b| b.address == *address)?;
            match command {
                Command::SetWeight { weight, .. } => backends[at].weight = *weight,
                Command::SetAdminState { state, .. } => backends[at].state = *state,
                _ => {
                    backends.remove(at);
                }
            }
        }
        Command::Batch(commands) => {
            let mut boots = false;
            for c in commands {
                boots |= change(spec, c)?;
            }
            return Some(boots);
        }
        _ => return None,
    }
    Some(false)
}

/// Compares the real outcome of `command` with the reference's.
fn compare(reference: &mut Reference, command: &Command, outcome: &Outcome) {
    match (command, outcome) {
        (Command::Independent(commands), Outcome::Each(each)) => {
            for (c, o) in commands.iter().zip(each) {
                compare(reference, c, o);
            }
        }
        _ => {
            if let Some(applied) = reference.apply(command) {
                assert_eq!(applied, outcome.is_applied(), "{command:.200?}: {outcome:?}");
            }
        }
    }
}

fn run(bootstrapped: bool, commands: &[Command]) {
    let mut state = start(bootstrapped);
    let mut reference = Reference {
        spec: state.spec().clone(),
        bootstrapped,
    };
    let tables = StickyTables::default();
    for command in commands {
        let outcome = apply_checked(&mut state, &tables, command);
        compare(&mut reference, command, &outcome);
        assert_eq!(&reference.spec, state.spec(), "after {command:.200?}");
        assert_eq!(reference.bootstrapped, state.is_bootstrapped());
    }
}

/// An `Independent` group does what its commands do one after the other.
fn independent_is_a_sequence(commands: Vec<Command>) {
    let mut whole = start(true);
    let mut alone = whole.clone();
    let (tables_whole, tables_alone) = (StickyTables::default(), StickyTables::default());
    let group = Command::Independent(commands.clone());
    let outcome = whole.apply_with(group.clone(), &tables_whole);
    if group.validate().is_err() && !matches!(outcome, Outcome::Each(_)) {
        return;
    }
    let each: Vec<Outcome> = commands
        .into_iter()
        .map(|c| alone.apply_with(c, &tables_alone))
        .collect();
    assert_eq!(outcome, Outcome::Each(each));
    assert_eq!(whole, alone);
    assert_eq!(tables_whole.stats(), tables_alone.stats());
}

/// A valid command's bytes with a few bytes changed, cut or added.
fn mangled() -> impl Strategy<Value = Vec<u8>> {
    let edits = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4);
    (hostile::command(), edits).prop_map(|(command, edits)| {
        let mut bytes = postcard::to_stdvec(&command).unwrap_or_default();
        for (at, byte, kind) in edits {
            if bytes.is_empty() {
                break;
            }
            let i = at.index(bytes.len());
            match kind {
                0 => bytes[i] = byte,
                1 => bytes.truncate(i),
                _ => bytes.insert(i, byte),
            }
        }
        bytes
    })
}

fn decode_and_apply(bytes: &[u8]) {
    if let Ok(command) = postcard::from_bytes::<Command>(bytes) {
        let mut state = start(true);
        apply_checked(&mut state, &StickyTables::default(), &command);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn on_the_example_cluster(commands in prop::collection::vec(hostile::command(), 1..12)) {
        run(true, &commands);
    }

    #[test]
    fn on_an_empty_state(commands in prop::collection::vec(hostile::command(), 1..12)) {
        run(false, &commands);
    }

    #[test]
    fn independent_commands_are_applied_one_by_one(commands in prop::collection::vec(hostile::command(), 0..12)) {
        independent_is_a_sequence(commands);
    }

    #[test]
    fn arbitrary_bytes_decode_or_fail(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_and_apply(&bytes);
    }

    #[test]
    fn mangled_commands_decode_or_fail(bytes in mangled()) {
        decode_and_apply(&bytes);
    }
}
