//! The Kubernetes manifests against the binary they run. Every overlay under
//! `deploy/k8s/overlays/` is rendered with `kubectl kustomize`, and for every callvault container:
//! each flag it passes exists in that subcommand's `--help`; its config file, taken from the
//! rendered ConfigMap, passes `callvault config check` with the container's own arguments and
//! environment (unknown keys and misspelt `CALLVAULT_*` variables fail); every `*_file` the config
//! names and its `data_dir` are on a volume the pod mounts, secrets included; its ports and probes
//! name ports it listens on and health services the binary reports; and the shard set, the
//! seeds and the meta addresses name pods the StatefulSets actually have.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use callvault_tests::{callvault_bin, repo_root};
use prost::Message;
use serde::Deserialize;
use serde_yaml_ng::Value;

/// `kubectl` on PATH, if any.
fn kubectl() -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("kubectl"))
        .find(|p| p.is_file())
}

fn overlays() -> Vec<PathBuf> {
    let dir = repo_root().join("deploy/k8s/overlays");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("kustomization.yaml").is_file())
        .collect();
    found.sort();
    assert!(
        found.len() >= 2,
        "expected dev and prod overlays in {}",
        dir.display()
    );
    found
}

fn render(kubectl: &Path, overlay: &Path) -> Vec<Value> {
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(overlay)
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        overlay.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8 YAML");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn s<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    s(v, path)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{path:?} missing in {v:?}"))
}

fn seq<'a>(v: &'a Value, path: &[&str]) -> Vec<&'a Value> {
    s(v, path)
        .and_then(Value::as_sequence)
        .map(|s| s.iter().collect())
        .unwrap_or_default()
}

fn kind_name(doc: &Value) -> (String, String) {
    (
        text(doc, &["kind"]).to_string(),
        text(doc, &["metadata", "name"]).to_string(),
    )
}

/// The long flags a subcommand's `--help` lists.
fn help_flags(subcommand: &[&str]) -> BTreeSet<String> {
    let out = Command::new(callvault_bin())
        .args(subcommand)
        .arg("--help")
        .output()
        .expect("callvault runs");
    assert!(
        out.status.success(),
        "callvault {subcommand:?} --help failed"
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with("--"))
        .map(|w| {
            w.trim_end_matches(',')
                .split(['=', '<', '['])
                .next()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Every `package.Service` of the binary's gRPC API (what health statuses are named after).
fn grpc_services() -> BTreeSet<String> {
    let set = prost_types::FileDescriptorSet::decode(callvault_proto::FILE_DESCRIPTOR_SET)
        .expect("descriptor set");
    set.file
        .iter()
        .flat_map(|f| {
            f.service
                .iter()
                .map(move |svc| format!("{}.{}", f.package(), svc.name()))
        })
        .collect()
}

/// Replaces `$(VAR)` references as the kubelet does.
fn expand(value: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = value.to_string();
    for (k, v) in env {
        out = out.replace(&format!("$({k})"), v);
    }
    out
}

/// What one mounted path resolves to.
enum Mounted<'a> {
    /// A file of a ConfigMap: its text.
    ConfigFile(&'a str),
    /// A file of a projected Secret volume that exists.
    SecretFile,
    /// Under a writable volume (PVC, emptyDir).
    Writable,
}

struct Pod<'a> {
    owner: String,
    spec: &'a Value,
    container: &'a Value,
    configmaps: &'a BTreeMap<String, BTreeMap<String, String>>,
    claim_templates: BTreeSet<String>,
}

impl<'a> Pod<'a> {
    fn volume(&self, name: &str) -> &'a Value {
        seq(self.spec, &["volumes"])
            .into_iter()
            .find(|v| text(v, &["name"]) == name)
            .unwrap_or_else(|| panic!("{}: no volume {name}", self.owner))
    }

    /// Which volume holds `path`, and what is there; panics if none does.
    fn resolve(&self, path: &str) -> Mounted<'a> {
        let mount = seq(self.container, &["volumeMounts"])
            .into_iter()
            .filter(|m| {
                let at = text(m, &["mountPath"]);
                path == at || path.starts_with(&format!("{at}/"))
            })
            .max_by_key(|m| text(m, &["mountPath"]).len())
            .unwrap_or_else(|| panic!("{}: nothing is mounted at {path}", self.owner));
        let name = text(mount, &["name"]);
        let rest = path[text(mount, &["mountPath"]).len()..].trim_start_matches('/');
        if self.claim_templates.contains(name) {
            return Mounted::Writable;
        }
        let volume = self.volume(name);
        if volume.get("emptyDir").is_some() {
            return Mounted::Writable;
        }
        if let Some(map) = s(volume, &["configMap", "name"]).and_then(Value::as_str) {
            let data = self
                .configmaps
                .get(map)
                .unwrap_or_else(|| panic!("{}: ConfigMap {map} is not rendered", self.owner));
            let file = data
                .get(rest)
                .unwrap_or_else(|| panic!("{}: ConfigMap {map} has no key {rest}", self.owner));
            return Mounted::ConfigFile(file);
        }
        if s(volume, &["projected"]).is_some() {
            let found = seq(volume, &["projected", "sources"])
                .into_iter()
                .any(|src| {
                    seq(src, &["secret", "items"])
                        .into_iter()
                        .any(|item| text(item, &["path"]) == rest)
                });
            assert!(
                found,
                "{}: no secret item {rest} in volume {name}",
                self.owner
            );
            return Mounted::SecretFile;
        }
        panic!(
            "{}: volume {name} is of a kind this test does not know",
            self.owner
        );
    }
}

fn run(args: &[String], env: &BTreeMap<String, String>) -> Output {
    Command::new(callvault_bin())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env)
        .current_dir(repo_root())
        .output()
        .expect("callvault runs")
}

/// Every `*_file` string in a TOML table, with its dotted key.
fn file_settings(table: &toml::Table, prefix: &str, out: &mut Vec<(String, String)>) {
    for (key, value) in table {
        let dotted = format!("{prefix}{key}");
        match value {
            toml::Value::String(path) if key.ends_with("_file") => {
                out.push((dotted, path.clone()));
            }
            toml::Value::Table(t) => file_settings(t, &format!("{dotted}."), out),
            _ => {}
        }
    }
}

fn port_of(addr: &str) -> i64 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr} has no port"))
}

#[test]
fn every_overlay_runs_flags_config_and_secrets_the_binary_has() {
    let Some(kubectl) = kubectl() else {
        eprintln!(
            "SKIPPED: kubectl is not on PATH, so the overlays cannot be rendered here \
             (scripts/deploy-check, which .ci/run runs first, installs it)"
        );
        return;
    };
    let services = grpc_services();
    let mut checked = 0usize;
    for overlay in overlays() {
        let docs = render(&kubectl, &overlay);
        let label = overlay.file_name().unwrap().to_string_lossy().to_string();
        let mut configmaps: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut replicas: BTreeMap<String, usize> = BTreeMap::new();
        let mut headless: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
        for doc in &docs {
            let (kind, name) = kind_name(doc);
            match kind.as_str() {
                "ConfigMap" => {
                    let data = s(doc, &["data"])
                        .and_then(Value::as_mapping)
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| {
                                    (k.as_str().unwrap().into(), v.as_str().unwrap().into())
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    configmaps.insert(name, data);
                }
                "StatefulSet" => {
                    let n = s(doc, &["spec", "replicas"])
                        .and_then(Value::as_u64)
                        .unwrap();
                    replicas.insert(name.clone(), n as usize);
                    assert_eq!(
                        text(doc, &["spec", "podManagementPolicy"]),
                        "Parallel",
                        "{label} {name}: a full restart must not wait for pod 0's readiness"
                    );
                }
                "Service"
                    if s(doc, &["spec", "clusterIP"]).and_then(Value::as_str) == Some("None") =>
                {
                    assert_eq!(
                        s(doc, &["spec", "publishNotReadyAddresses"]).and_then(Value::as_bool),
                        Some(true),
                        "{label} {name}: peers must reach members that are not ready yet"
                    );
                    let ports = seq(doc, &["spec", "ports"])
                        .into_iter()
                        .map(|p| s(p, &["port"]).and_then(Value::as_i64).unwrap())
                        .collect();
                    headless.insert(name, ports);
                }
                _ => {}
            }
        }
        // The StatefulSets' pod addresses: what seeds, meta_addrs and the shard set may name.
        let pod_addrs = |set: &str| -> BTreeSet<String> {
            let ports = &headless[set];
            (0..replicas[set])
                .flat_map(|i| ports.iter().map(move |p| format!("{set}-{i}.{set}:{p}")))
                .collect()
        };
        let meta_pods = pod_addrs("callvault-meta");
        let blob_pods = pod_addrs("callvault-blob");
        let shard_set: BTreeSet<(String, String)> = (0..replicas["callvault-blob"])
            .map(|i| {
                (
                    format!("blob-{}", i + 1),
                    format!("callvault-blob-{i}.callvault-blob:7401"),
                )
            })
            .collect();
        assert!(shard_set.iter().all(|(_, a)| blob_pods.contains(a)));

        for doc in &docs {
            let (kind, name) = kind_name(doc);
            if !matches!(kind.as_str(), "StatefulSet" | "Deployment" | "Job") {
                continue;
            }
            let spec = s(doc, &["spec", "template", "spec"]).unwrap();
            let claim_templates: BTreeSet<String> = seq(doc, &["spec", "volumeClaimTemplates"])
                .into_iter()
                .map(|c| text(c, &["metadata", "name"]).to_string())
                .collect();
            for container in seq(spec, &["containers"]) {
                if !text(container, &["image"]).contains("callvault") {
                    continue;
                }
                let owner = format!("{label} {kind}/{name}");
                let pod = Pod {
                    owner: owner.clone(),
                    spec,
                    container,
                    configmaps: &configmaps,
                    claim_templates: claim_templates.clone(),
                };

                // Hardening every pod must have.
                let sc = s(container, &["securityContext"]).expect("securityContext");
                assert_eq!(
                    s(sc, &["readOnlyRootFilesystem"]).and_then(Value::as_bool),
                    Some(true),
                    "{owner}"
                );
                assert_eq!(
                    s(sc, &["allowPrivilegeEscalation"]).and_then(Value::as_bool),
                    Some(false),
                    "{owner}"
                );
                assert_eq!(
                    s(sc, &["runAsNonRoot"]).and_then(Value::as_bool),
                    Some(true),
                    "{owner}"
                );
                assert_eq!(
                    seq(sc, &["capabilities", "drop"])
                        .first()
                        .and_then(|v| v.as_str()),
                    Some("ALL"),
                    "{owner}"
                );
                for bound in ["requests", "limits"] {
                    for r in ["cpu", "memory"] {
                        assert!(
                            s(container, &["resources", bound, r]).is_some(),
                            "{owner}: {bound}.{r}"
                        );
                    }
                }

                // The environment the kubelet would give it ($(VAR) expanded in order).
                let mut env = BTreeMap::new();
                for var in seq(container, &["env"]) {
                    let key = text(var, &["name"]).to_string();
                    let value = if let Some(v) = s(var, &["value"]).and_then(Value::as_str) {
                        expand(v, &env)
                    } else if let Some(field) = s(var, &["valueFrom", "fieldRef", "fieldPath"]) {
                        assert_eq!(field.as_str(), Some("metadata.name"), "{owner}: {key}");
                        // A StatefulSet's last pod: the ordinal with the largest node id.
                        let last = replicas.get(&name).map_or(0, |n| n - 1);
                        format!("{name}-{last}")
                    } else if s(var, &["valueFrom", "secretKeyRef"]).is_some() {
                        "secret-value-from-kubernetes-0123456789".to_string()
                    } else {
                        panic!("{owner}: env {key} has a source this test does not know");
                    };
                    env.insert(key, value);
                }
                let args: Vec<String> = seq(container, &["args"])
                    .into_iter()
                    .map(|a| expand(a.as_str().unwrap(), &env))
                    .collect();
                assert!(
                    !args.iter().any(|a| a.contains("$(")),
                    "{owner}: unexpanded variable in {args:?}"
                );

                // The CA a client command trusts is a mounted secret. The commands this test
                // runs here do not dial, and the file exists only in the pod: drop it.
                if let Some(ca) = env.remove("CALLVAULT_TLS_CA_FILE") {
                    assert!(
                        matches!(pod.resolve(&ca), Mounted::SecretFile),
                        "{owner}: CALLVAULT_TLS_CA_FILE {ca} is not a mounted secret"
                    );
                }

                // Every flag is one the subcommand has.
                let subcommand: Vec<&str> = args
                    .iter()
                    .map(String::as_str)
                    .take_while(|a| !a.starts_with('-'))
                    .collect();
                let flags = help_flags(&subcommand);
                for flag in args.iter().filter(|a| a.starts_with("--")) {
                    assert!(
                        flags.contains(flag.split('=').next().unwrap()),
                        "{owner}: `callvault {} --help` has no {flag} (it has {flags:?})",
                        subcommand.join(" ")
                    );
                }

                // The files its arguments name are mounted; config files are checked.
                let tmp = tempfile::tempdir().unwrap();
                let mut local_args = Vec::new();
                let mut config_text = None;
                let mut i = 0;
                while i < args.len() {
                    let arg = &args[i];
                    local_args.push(arg.clone());
                    if arg.starts_with('/')
                        && let Mounted::ConfigFile(file) = pod.resolve(arg)
                    {
                        let local = tmp.path().join(Path::new(arg).file_name().unwrap());
                        std::fs::write(&local, file).unwrap();
                        *local_args.last_mut().unwrap() = local.to_string_lossy().into();
                        if args[i - 1] == "--config" {
                            config_text = Some(file.to_string());
                        }
                    }
                    i += 1;
                }

                match subcommand.as_slice() {
                    ["serve"] => {
                        let config = config_text
                            .unwrap_or_else(|| panic!("{owner}: serve without --config"));
                        let mut check = vec!["config".to_string(), "check".to_string()];
                        check.extend(local_args[1..].iter().cloned());
                        let out = run(&check, &env);
                        assert!(
                            out.status.success(),
                            "{owner}: `callvault {}` refused the pod's config:\n{}",
                            check.join(" "),
                            String::from_utf8_lossy(&out.stderr)
                        );
                        check_config(&pod, &config, &env, &meta_pods, &shard_set, &headless);
                        check_probes(&owner, container, &config, &services);
                        checked += 1;
                    }
                    ["policy", "put-all"] => {
                        let file = local_args
                            [local_args.iter().position(|a| a == "--file").unwrap() + 1]
                            .clone();
                        let out = run(
                            &[
                                "policy".into(),
                                "check".into(),
                                "--require-all".into(),
                                file,
                            ],
                            &env,
                        );
                        assert!(
                            out.status.success(),
                            "{owner}: the policies it puts in force do not check:\n{}{}",
                            String::from_utf8_lossy(&out.stdout),
                            String::from_utf8_lossy(&out.stderr)
                        );
                        assert!(
                            env.contains_key("CALLVAULT_TOKEN"),
                            "{owner}: no operator token"
                        );
                        checked += 1;
                    }
                    other => panic!("{owner}: a callvault container running {other:?}"),
                }
            }
        }
    }
    eprintln!("checked {checked} callvault containers across every overlay");
    assert!(checked >= 10, "only {checked} containers checked");
}

/// What a config says must exist in the pod and in the cluster.
fn check_config(
    pod: &Pod<'_>,
    config: &str,
    env: &BTreeMap<String, String>,
    meta_pods: &BTreeSet<String>,
    shard_set: &BTreeSet<(String, String)>,
    headless: &BTreeMap<String, BTreeSet<i64>>,
) {
    let owner = &pod.owner;
    let table: toml::Table = config.parse().unwrap_or_else(|e| panic!("{owner}: {e}"));
    let mut files = Vec::new();
    file_settings(&table, "", &mut files);
    for (key, path) in files {
        assert!(
            matches!(
                pod.resolve(&path),
                Mounted::SecretFile | Mounted::ConfigFile(_)
            ),
            "{owner}: {key} = {path} is not a mounted secret or config file"
        );
    }
    let data_dir = table["data_dir"].as_str().unwrap();
    assert!(
        matches!(pod.resolve(data_dir), Mounted::Writable),
        "{owner}: data_dir {data_dir} is not on a writable volume (the root filesystem is read-only)"
    );

    let roles: Vec<&str> = table["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let strings = |v: Option<&toml::Value>| -> Vec<String> {
        v.and_then(toml::Value::as_array)
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    if roles.contains(&"meta") {
        let seeds = strings(table.get("bootstrap").and_then(|b| b.get("seeds")));
        assert!(!seeds.is_empty(), "{owner}: no seeds");
        for seed in seeds {
            assert!(
                meta_pods.contains(&seed),
                "{owner}: seed {seed} is no meta pod"
            );
        }
        let advertise = &env["CALLVAULT_ADVERTISE_ADDR"];
        assert!(
            meta_pods.contains(advertise),
            "{owner}: advertises {advertise}"
        );
    }
    for addr in strings(table.get("cluster").and_then(|c| c.get("meta_addrs"))) {
        assert!(
            meta_pods.contains(&addr),
            "{owner}: meta_addrs has {addr}, no meta pod"
        );
    }
    if roles.contains(&"blob") || roles.contains(&"ingest") {
        let shards: BTreeSet<(String, String)> = table["blob"]["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["id"].as_str().unwrap().to_string(),
                    s["addr"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            &shards, shard_set,
            "{owner}: the shard set is not the blob StatefulSet's pods"
        );
    }
    if roles.contains(&"blob") {
        let port = port_of(table["blob"]["listen_addr"].as_str().unwrap());
        assert!(
            headless["callvault-blob"].contains(&port),
            "{owner}: shard port {port}"
        );
    }
}

/// Ports and probes name what the process listens on and the health statuses it reports.
fn check_probes(owner: &str, container: &Value, config: &str, services: &BTreeSet<String>) {
    let table: toml::Table = config.parse().unwrap();
    let ports: BTreeMap<String, i64> = seq(container, &["ports"])
        .into_iter()
        .map(|p| {
            (
                text(p, &["name"]).to_string(),
                s(p, &["containerPort"]).and_then(Value::as_i64).unwrap(),
            )
        })
        .collect();
    let listen = port_of(table["listen_addr"].as_str().unwrap());
    assert_eq!(
        ports.get("grpc"),
        Some(&listen),
        "{owner}: grpc port vs listen_addr"
    );
    if let Some(blob) = table.get("blob").and_then(|b| b.get("listen_addr")) {
        assert_eq!(
            ports.get("shard"),
            Some(&port_of(blob.as_str().unwrap())),
            "{owner}"
        );
    }
    // With TLS on, the kubelet (which cannot speak it) probes the plaintext health port.
    let tls = table.get("tls");
    let probed = match tls.and_then(|t| t.get("health_listen_addr")) {
        Some(addr) => {
            let port = port_of(addr.as_str().unwrap());
            assert_eq!(ports.get("health"), Some(&port), "{owner}: health port");
            port
        }
        None => {
            assert!(
                tls.is_none(),
                "{owner}: TLS on without tls.health_listen_addr: the probes cannot reach it"
            );
            listen
        }
    };
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let grpc = s(container, &[probe, "grpc"])
            .unwrap_or_else(|| panic!("{owner}: {probe} must be a gRPC health probe"));
        let port = s(grpc, &["port"]).and_then(Value::as_i64).unwrap();
        assert_eq!(port, probed, "{owner}: {probe} port");
        let service = s(grpc, &["service"]).and_then(Value::as_str).unwrap_or("");
        if probe == "readinessProbe" {
            assert!(
                services.contains(service),
                "{owner}: readiness names {service:?}, not a service of the binary"
            );
        } else {
            assert_eq!(service, "", "{owner}: {probe} should ask about the process");
        }
    }
}

#[test]
fn config_check_names_unknown_keys_and_misspelt_variables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.toml");
    let good =
        std::fs::read_to_string(repo_root().join("deploy/k8s/base/config/meta.toml")).unwrap();
    std::fs::write(&path, &good).unwrap();
    let path_arg = path.to_string_lossy().to_string();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["config", "check", "--config", &path_arg]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let mut env = BTreeMap::new();
    env.insert(
        "CALLVAULT_ADVERTISE_ADDR".to_string(),
        "callvault-meta-1.callvault-meta:7101".to_string(),
    );

    let out = run(&args(&["--node-id-from-ordinal", "callvault-meta-1"]), &env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("node 2 "), "{stdout}");
    assert!(
        stdout.contains("callvault-meta-1.callvault-meta:7101"),
        "{stdout}"
    );
    assert!(stdout.contains("bootstrap Auto"), "{stdout}");

    // Without the ordinal the file has no node_id.
    let out = run(&args(&[]), &env);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("node_id"));

    // A pod name without an ordinal.
    let out = run(&args(&["--node-id-from-ordinal", "callvault-meta"]), &env);
    assert!(!out.status.success());

    // A misspelt key.
    std::fs::write(
        &path,
        good.replace("join_timeout_seconds", "join_timeout_secs"),
    )
    .unwrap();
    let out = run(&args(&["--node-id-from-ordinal", "callvault-meta-1"]), &env);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("join_timeout_secs"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&path, &good).unwrap();

    // A misspelt variable, which serve would ignore.
    env.insert("CALLVAULT_ADVERTISE_ADR".into(), "x:1".into());
    let out = run(&args(&["--node-id-from-ordinal", "callvault-meta-1"]), &env);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("CALLVAULT_ADVERTISE_ADR"));
}

/// The Secrets a workload's pods mount (projected or plain volumes, and environment references).
fn mounted_secrets(doc: &Value) -> BTreeSet<String> {
    let spec = s(doc, &["spec", "template", "spec"]).expect("a pod template");
    let mut names = BTreeSet::new();
    for volume in seq(spec, &["volumes"]) {
        if let Some(name) = s(volume, &["secret", "secretName"]).and_then(Value::as_str) {
            names.insert(name.to_string());
        }
        for source in seq(volume, &["projected", "sources"]) {
            if let Some(name) = s(source, &["secret", "name"]).and_then(Value::as_str) {
                names.insert(name.to_string());
            }
        }
    }
    for container in seq(spec, &["containers"]) {
        for var in seq(container, &["env"]) {
            if let Some(name) =
                s(var, &["valueFrom", "secretKeyRef", "name"]).and_then(Value::as_str)
            {
                names.insert(name.to_string());
            }
        }
    }
    names
}

/// The README's "Who holds what" table: each workload row and the Secrets its "mounts" column
/// names.
fn readme_holdings() -> BTreeMap<String, BTreeSet<String>> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README");
    let section = readme
        .split("## Who holds what")
        .nth(1)
        .expect("README has a \"Who holds what\" section");
    let mut rows = BTreeMap::new();
    for line in section.lines().take_while(|l| !l.starts_with("## ")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Some(workload) = cells
            .get(1)
            .and_then(|c| c.strip_prefix('`'))
            .and_then(|c| c.split('`').next())
            .filter(|w| w.starts_with("callvault-"))
        else {
            continue;
        };
        let secrets = cells[2]
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|name| name.starts_with("callvault-"))
            .map(str::to_string)
            .collect();
        rows.insert(workload.to_string(), secrets);
    }
    rows
}

#[test]
fn only_the_keys_workload_holds_what_opens_content_and_the_readme_says_who_holds_what() {
    let Some(kubectl) = kubectl() else {
        eprintln!("SKIPPED: kubectl is not on PATH");
        return;
    };
    let readme = readme_holdings();
    for overlay in overlays() {
        let label = overlay.file_name().unwrap().to_string_lossy().to_string();
        let docs = render(&kubectl, &overlay);
        let mut seen = BTreeSet::new();
        for doc in &docs {
            let (kind, name) = kind_name(doc);
            if kind == "NetworkPolicy" && name == "callvault-keys" {
                let from: Vec<&str> = seq(doc, &["spec", "ingress"])
                    .into_iter()
                    .flat_map(|rule| seq(rule, &["from"]))
                    .map(|peer| {
                        text(
                            peer,
                            &["podSelector", "matchLabels", "app.kubernetes.io/component"],
                        )
                    })
                    .collect();
                assert_eq!(
                    from,
                    ["api"],
                    "{label}: only api pods may reach the keys role"
                );
            }
            if !matches!(kind.as_str(), "StatefulSet" | "Deployment" | "Job") {
                continue;
            }
            let secrets = mounted_secrets(doc);
            if name != "callvault-keys" {
                assert!(
                    !secrets.contains("callvault-jurisdiction-keys"),
                    "{label} {name} mounts the private keys"
                );
            }
            let expected = readme
                .get(&name)
                .unwrap_or_else(|| panic!("{label} {name}: no row in the README's table"));
            assert_eq!(&secrets, expected, "{label} {name}: README vs manifests");
            seen.insert(name);
        }
        let listed: BTreeSet<String> = readme.keys().cloned().collect();
        assert_eq!(seen, listed, "{label}: README rows vs workloads");
    }
}
