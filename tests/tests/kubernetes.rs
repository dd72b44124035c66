//! `deploy/kubernetes/` checked without a cluster: every manifest parses,
//! has what Kubernetes requires of its kind, and agrees with the others —
//! the kustomization lists every file; the StatefulSet, headless Service
//! and PodDisruptionBudget select the same pods; each pod ordinal's config
//! file is a valid raftlb config whose node id, advertised name and peers
//! follow from the ordinal, the Service and the namespace.

use std::collections::BTreeSet;
use std::path::PathBuf;
use yaml_rust2::{Yaml, YamlLoader};

fn dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/kubernetes"))
}

/// Every document of `file`.
fn load(file: &str) -> Vec<Yaml> {
    let path = dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// The one document of `file`, of kind `kind`.
fn one(file: &str, kind: &str) -> Yaml {
    let docs = load(file);
    assert_eq!(docs.len(), 1, "{file}: one document");
    let doc = docs.into_iter().next().expect("one");
    assert_eq!(doc["kind"].as_str(), Some(kind), "{file}: kind");
    doc
}

fn str_of<'a>(doc: &'a Yaml, path: &[&str]) -> &'a str {
    path.iter()
        .fold(doc, |node, key| &node[*key])
        .as_str()
        .unwrap_or_else(|| panic!("{} missing or not a string", path.join(".")))
}

fn labels(node: &Yaml) -> BTreeSet<(String, String)> {
    node.as_hash()
        .map(|hash| {
            hash.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_manifest_parses_and_has_what_its_kind_requires() {
    let kustomization = one("kustomization.yaml", "Kustomization");
    let resources: BTreeSet<String> = kustomization["resources"]
        .as_vec()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().expect("a file").to_string())
        .collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(dir())
        .expect("deploy/kubernetes")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
        .collect();
    assert_eq!(resources, on_disk, "the kustomization lists every manifest");
    for file in &resources {
        for doc in load(file) {
            for required in [&["apiVersion"][..], &["kind"], &["metadata", "name"]] {
                str_of(&doc, required);
            }
        }
    }
}

#[test]
fn the_statefulset_service_budget_and_configs_agree() {
    let namespace = str_of(&one("kustomization.yaml", "Kustomization"), &["namespace"]).to_string();
    assert_eq!(
        str_of(&one("namespace.yaml", "Namespace"), &["metadata", "name"]),
        namespace
    );
    let set = one("statefulset.yaml", "StatefulSet");
    let service = one("service.yaml", "Service");
    let budget = one("poddisruptionbudget.yaml", "PodDisruptionBudget");
    let config = one("configmap.yaml", "ConfigMap");

    let spec = &set["spec"];
    let replicas = spec["replicas"].as_i64().expect("replicas");
    assert_eq!(replicas, 3);
    assert_eq!(spec["podManagementPolicy"].as_str(), Some("Parallel"));
    let service_name = str_of(&service, &["metadata", "name"]);
    assert_eq!(spec["serviceName"].as_str(), Some(service_name));
    assert_eq!(service["spec"]["clusterIP"].as_str(), Some("None"), "headless");
    assert_eq!(service["spec"]["publishNotReadyAddresses"].as_bool(), Some(true));

    let pod_labels = labels(&spec["template"]["metadata"]["labels"]);
    let selected = labels(&spec["selector"]["matchLabels"]);
    assert!(
        !selected.is_empty() && selected.is_subset(&pod_labels),
        "the StatefulSet selects its pods"
    );
    assert!(
        labels(&service["spec"]["selector"]).is_subset(&pod_labels),
        "the Service selects them"
    );
    assert!(labels(&budget["spec"]["selector"]["matchLabels"]).is_subset(&pod_labels));
    assert_eq!(budget["spec"]["maxUnavailable"].as_i64(), Some(1));

    let pod = &spec["template"]["spec"];
    assert_eq!(
        pod["hostNetwork"].as_bool(),
        Some(true),
        "the VIP lives on the host's network"
    );
    assert_eq!(pod["dnsPolicy"].as_str(), Some("ClusterFirstWithHostNet"));
    let containers = pod["containers"].as_vec().expect("containers");
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    assert_eq!(
        str_of(container, &["readinessProbe", "httpGet", "path"]),
        "/readyz"
    );
    assert_eq!(
        str_of(container, &["livenessProbe", "httpGet", "path"]),
        "/healthz"
    );
    let pre_stop: Vec<&str> = container["lifecycle"]["preStop"]["exec"]["command"]
        .as_vec()
        .expect("preStop command")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(pre_stop.ends_with(&["node", "drain"]), "{pre_stop:?}");
    let added: BTreeSet<&str> = container["securityContext"]["capabilities"]["add"]
        .as_vec()
        .expect("capabilities")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(
        added,
        BTreeSet::from(["NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE"])
    );
    assert!(
        !spec["volumeClaimTemplates"].is_badvalue(),
        "a data volume per pod"
    );

    // The config file each ordinal reads, where the ConfigMap is mounted.
    let args: Vec<&str> = container["args"]
        .as_vec()
        .expect("args")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    let config_path = args
        .iter()
        .find(|a| a.contains("$(POD_INDEX)"))
        .expect("a per-ordinal config");
    let mount = container["volumeMounts"]
        .as_vec()
        .expect("mounts")
        .iter()
        .find(|m| m["name"].as_str() == Some("config"))
        .and_then(|m| m["mountPath"].as_str())
        .expect("the config mount");
    let file_pattern = config_path
        .strip_prefix(&format!("{mount}/"))
        .expect("the config file is in the ConfigMap's mount");
    let peers: Vec<String> = (0..replicas)
        .map(|i| format!("raftlb-{i}.{service_name}.{namespace}.svc.cluster.local:7000"))
        .collect();
    for ordinal in 0..replicas {
        let key = file_pattern.replace("$(POD_INDEX)", &ordinal.to_string());
        let text = config["data"][key.as_str()]
            .as_str()
            .unwrap_or_else(|| panic!("the ConfigMap has no {key}"));
        let parsed = raftlb_config::parse(&key, text).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(
            parsed.node.id,
            ordinal as u64 + 1,
            "{key}: pod raftlb-{ordinal} is node {}",
            ordinal + 1
        );
        let advertised = parsed.membership.advertised().map(|a| a.to_string());
        assert_eq!(
            advertised.as_deref(),
            Some(peers[ordinal as usize].as_str()),
            "{key}"
        );
        let listed: Vec<String> = parsed.membership.peers.values().map(|p| p.to_string()).collect();
        assert_eq!(listed, peers, "{key}: the peers are the pods' names");
    }
    println!(
        "{} manifests parse; {replicas} pods, peers {peers:?}",
        load("kustomization.yaml")[0]["resources"]
            .as_vec()
            .map_or(0, Vec::len)
    );
}
