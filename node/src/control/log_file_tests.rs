//! The entries' file: records round-trip, truncation and rewriting, and
//! what opening makes of a crash's leftovers and of damage.

use super::*;

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let path = std::env::temp_dir().join(format!("raftlb-log-file-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create");
        Dir(path)
    }

    /// The one log file in the directory.
    fn log_path(&self) -> PathBuf {
        let mut logs: Vec<_> = fs::read_dir(&self.0)
            .expect("read dir")
            .map(|item| item.expect("item").path())
            .filter(|path| {
                path.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(PREFIX))
            })
            .collect();
        assert_eq!(logs.len(), 1, "{logs:?}");
        logs.remove(0)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Entries `from..=to`, each a few hundred bytes that say their index.
fn entries(from: u64, to: u64) -> Vec<(u64, Vec<u8>)> {
    (from..=to)
        .map(|index| (index, format!("entry {index} ").repeat(30).into_bytes()))
        .collect()
}

fn indexes(log: &LogFile) -> Vec<u64> {
    log.read(0, u64::MAX)
        .expect("read")
        .into_iter()
        .map(|(index, bytes)| {
            assert!(bytes.starts_with(format!("entry {index} ").as_bytes()));
            index
        })
        .collect()
}

#[test]
fn entries_round_trip_truncate_and_survive_a_reopen() {
    let dir = Dir::new("round-trip");
    let (mut log, recovered) = LogFile::open(&dir.0).expect("create");
    assert_eq!(recovered, Recovered::default());
    assert_eq!(log.last_index(), None);
    log.append(&entries(5, 9)).expect("append");
    log.append(&entries(10, 12)).expect("append");
    assert_eq!(indexes(&log), (5..=12).collect::<Vec<_>>());
    assert_eq!(log.read(7, 9).expect("read").len(), 2);
    assert!(log.read(13, 20).expect("read").is_empty());
    log.truncate(11).expect("truncate");
    assert_eq!(log.last_index(), Some(10));
    let hole = log.append(&entries(12, 12)).expect_err("a hole");
    assert!(hole.to_string().contains("hole"), "{hole}");
    log.append(&entries(11, 11)).expect("append after truncation");
    drop(log);
    let (log, recovered) = LogFile::open(&dir.0).expect("reopen");
    assert_eq!(recovered, Recovered::default());
    assert_eq!(indexes(&log), (5..=11).collect::<Vec<_>>());
}

#[test]
fn a_rewrite_keeps_the_rest_in_a_new_file_and_deletes_the_old() {
    let dir = Dir::new("rewrite");
    let (mut log, _) = LogFile::open(&dir.0).expect("create");
    log.append(&entries(1, 100)).expect("append");
    let before = dir.log_path();
    log.rewrite(91, |_, sealed| Ok(sealed.to_vec())).expect("rewrite");
    assert_ne!(dir.log_path(), before, "a new generation's file");
    assert_eq!(indexes(&log), (91..=100).collect::<Vec<_>>());
    log.append(&entries(101, 102)).expect("append after");
    // Purging past the end leaves an empty log that takes any next index.
    log.rewrite(500, |_, sealed| Ok(sealed.to_vec()))
        .expect("rewrite all");
    assert_eq!(log.last_index(), None);
    log.append(&entries(500, 501)).expect("append after all purged");
    drop(log);
    // A crash between the rename and the delete leaves two generations:
    // the newer is the log.
    fs::write(dir.0.join(format!("{PREFIX}{:016x}", 1)), b"old").expect("old generation");
    fs::write(dir.0.join(format!("{PREFIX}{:016x}.tmp", 9)), b"half").expect("temporary");
    let (log, _) = LogFile::open(&dir.0).expect("reopen");
    assert_eq!(indexes(&log), vec![500, 501]);
    dir.log_path();
}

#[test]
fn an_unfinished_last_write_is_cut_off() {
    let dir = Dir::new("torn");
    let (mut log, _) = LogFile::open(&dir.0).expect("create");
    log.append(&entries(1, 10)).expect("append");
    let whole = fs::metadata(dir.log_path()).expect("size").len();
    log.append(&entries(11, 13)).expect("append");
    drop(log);
    let path = dir.log_path();
    // The file's end cuts the last record short.
    let file = OpenOptions::new().write(true).open(&path).expect("open");
    file.set_len(whole + 100).expect("cut");
    let (log, recovered) = LogFile::open(&dir.0).expect("reopen");
    assert_eq!(indexes(&log), (1..=10).collect::<Vec<_>>());
    assert_eq!(recovered.torn_bytes, 100);
    assert_eq!(fs::metadata(&path).expect("size").len(), whole);
    drop(log);
    // Pages never written read back as zeros.
    file.set_len(whole + 4096).expect("zeros");
    let (log, recovered) = LogFile::open(&dir.0).expect("reopen");
    assert_eq!(indexes(&log), (1..=10).collect::<Vec<_>>());
    assert_eq!(recovered.torn_bytes, 4096);
}

#[test]
fn damage_a_crash_cannot_explain_is_refused_and_kept() {
    let dir = Dir::new("corrupt");
    let (mut log, _) = LogFile::open(&dir.0).expect("create");
    log.append(&entries(1, 10)).expect("append");
    drop(log);
    let path = dir.log_path();
    let mut bytes = fs::read(&path).expect("read");
    let middle = bytes.windows(8).position(|w| w == b"entry 5 ").expect("entry 5") + 3;
    bytes[middle] ^= 0x40;
    fs::write(&path, &bytes).expect("damage");
    let error = LogFile::open(&dir.0).expect_err("refused");
    assert!(error.to_string().contains("fails its checksum"), "{error}");
    assert_eq!(fs::read(&path).expect("kept"), bytes, "nothing rewritten");
    fs::write(&path, b"not a log").expect("foreign");
    let error = LogFile::open(&dir.0).expect_err("refused");
    assert!(error.to_string().contains("does not start like"), "{error}");
}

#[test]
fn no_cut_or_flipped_byte_yields_a_wrong_entry_or_a_panic() {
    let dir = Dir::new("every-byte");
    let (mut log, _) = LogFile::open(&dir.0).expect("create");
    let written = entries(1, 3);
    log.append(&written).expect("append");
    drop(log);
    let path = dir.log_path();
    let whole = fs::read(&path).expect("read");
    // What a damaged file may still give: a prefix of what was written.
    let is_prefix = |log: &LogFile| {
        let read = log.read(0, u64::MAX).expect("read");
        read.len() <= written.len() && read.iter().zip(&written).all(|(a, b)| a == b)
    };
    for len in 0..whole.len() {
        fs::write(&path, &whole[..len]).expect("cut");
        match LogFile::open(&dir.0) {
            Ok((log, _)) => assert!(is_prefix(&log), "cut at {len}"),
            Err(e) => assert!(len < MAGIC.len(), "cut at {len} refused: {e}"),
        }
    }
    for at in 0..whole.len() {
        let mut bytes = whole.clone();
        bytes[at] ^= 0x01;
        fs::write(&path, &bytes).expect("flip");
        if let Ok((log, _)) = LogFile::open(&dir.0) {
            assert!(is_prefix(&log), "flipped byte {at}");
        }
    }
}
