//! `lookout models pull` against a loopback HTTP server (std TcpListener) serving the tiny SmolVLM
//! fixture with Hugging Face's URL layout: hashes checked, files appear only when right, `.part`
//! downloads resume with range requests, a corrupted file never lands.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use lookout::vlm::pull::{self, FileOutcome, PullError, PullOptions, RemoteFile, RemoteModel};
use sha2::{Digest, Sha256};

const REPO: &str = "test-org/SmolVLM-tiny";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vlm/smolvlm-tiny")
}

/// A tiny HTTP/1.1 server: GET only, `Range: bytes=N-` honoured, one thread per connection.
struct Server {
    base: String,
    /// Request lines with their Range header, in arrival order.
    log: Arc<Mutex<Vec<String>>>,
}

fn serve(files: HashMap<String, Vec<u8>>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(Vec::new()));
    let files = Arc::new(files);
    let l2 = log.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let files = files.clone();
            let log = l2.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let mut range = None;
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                        let lower = h.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("range: bytes=") {
                            range = v.trim().trim_end_matches('-').parse::<usize>().ok();
                        }
                    }
                    log.lock()
                        .unwrap()
                        .push(format!("GET {path} range={range:?}"));
                    let resp = match files.get(&path) {
                        None => b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_vec(),
                        Some(body) => match range {
                            Some(start) if start < body.len() => {
                                let mut r = format!(
                                    "HTTP/1.1 206 Partial Content\r\ncontent-length: {}\r\ncontent-range: bytes {}-{}/{}\r\n\r\n",
                                    body.len() - start,
                                    start,
                                    body.len() - 1,
                                    body.len()
                                )
                                .into_bytes();
                                r.extend_from_slice(&body[start..]);
                                r
                            }
                            Some(_) => {
                                b"HTTP/1.1 416 Range Not Satisfiable\r\ncontent-length: 0\r\n\r\n"
                                    .to_vec()
                            }
                            None => {
                                let mut r = format!(
                                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                                    body.len()
                                )
                                .into_bytes();
                                r.extend_from_slice(body);
                                r
                            }
                        },
                    };
                    if conn.write_all(&resp).is_err() {
                        return;
                    }
                }
            });
        }
    });
    Server { base, log }
}

fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

const COMMON: &[&str] = &[
    "config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "chat_template.json",
];
const GRAPHS: &[&str] = &[
    "onnx/vision_encoder_int8.onnx",
    "onnx/embed_tokens_int8.onnx",
    "onnx/decoder_model_merged_int8.onnx",
];

/// The fixture as the server holds it, and a manifest for it with published hashes for the graphs
/// (configs left unhashed: trust on first use).
fn setup() -> (HashMap<String, Vec<u8>>, RemoteModel) {
    let mut served = HashMap::new();
    let mut remote = |path: &str, hashed: bool| {
        let bytes = std::fs::read(fixture().join(path)).unwrap();
        let f = RemoteFile {
            path: path.to_string(),
            sha256: hashed.then(|| sha(&bytes)),
            size: hashed.then_some(bytes.len() as u64),
            optional: false,
        };
        served.insert(format!("/{REPO}/resolve/main/{path}"), bytes);
        f
    };
    let mut common: Vec<RemoteFile> = COMMON.iter().map(|p| remote(p, false)).collect();
    let graphs: Vec<RemoteFile> = GRAPHS.iter().map(|p| remote(p, true)).collect();
    common.push(RemoteFile {
        path: "processor_config.json".into(),
        sha256: None,
        size: None,
        optional: true,
    });
    let model = RemoteModel {
        name: "smolvlm-tiny".into(),
        repo: REPO.into(),
        revision: "main".into(),
        common,
        variants: BTreeMap::from([("_int8".to_string(), graphs)]),
        hash_source: "test".into(),
    };
    (served, model)
}

fn opts(dir: &Path, base: &str) -> PullOptions {
    PullOptions {
        dir: dir.to_path_buf(),
        base_url: base.to_string(),
        suffix: "_int8".into(),
        progress: false,
    }
}

#[test]
fn pull_downloads_checks_and_the_model_runs() {
    let (served, model) = setup();
    let server = serve(served);
    let tmp = tempfile::tempdir().unwrap();
    let reports = pull::pull(&model, &opts(tmp.path(), &server.base)).unwrap();
    assert_eq!(reports.len(), COMMON.len() + 1 + GRAPHS.len());
    for r in &reports {
        if r.path == "processor_config.json" {
            assert_eq!(r.outcome, FileOutcome::Skipped);
            continue;
        }
        assert_eq!(r.outcome, FileOutcome::Downloaded, "{}", r.path);
        assert_eq!(r.verified_against_published, r.path.ends_with(".onnx"));
        assert_eq!(
            std::fs::read(tmp.path().join(&r.path)).unwrap(),
            std::fs::read(fixture().join(&r.path)).unwrap()
        );
    }
    // Trust on first use: the unhashed files' hashes are recorded.
    let lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join(pull::LOCK_FILE)).unwrap())
            .unwrap();
    assert_eq!(
        lock["files"]["tokenizer.json"].as_str().unwrap(),
        sha(&std::fs::read(fixture().join("tokenizer.json")).unwrap())
    );
    assert!(lock["files"]
        .get("onnx/decoder_model_merged_int8.onnx")
        .is_none());
    // The pulled folder is a working model.
    let mut m = lookout::vlm::load(tmp.path(), lookout::vlm::Variant::Int8, 1).unwrap();
    let img = image::open(fixture().join("reference/image.png"))
        .unwrap()
        .to_rgb8();
    let g = m
        .generate(
            &img,
            "Describe this image.",
            &lookout::vlm::GenerateOptions::default(),
            &mut |_| {},
        )
        .unwrap();
    assert!(!g.token_ids.is_empty());

    // A second pull finds everything in place and downloads nothing.
    let before = server.log.lock().unwrap().len();
    let again = pull::pull(&model, &opts(tmp.path(), &server.base)).unwrap();
    assert!(again.iter().all(|r| r.outcome != FileOutcome::Downloaded));
    let after = server.log.lock().unwrap().clone();
    // Only the optional missing file is asked for again.
    assert_eq!(after.len() - before, 1, "{:?}", &after[before..]);
}

#[test]
fn a_corrupted_download_fails_the_hash_and_leaves_no_file() {
    let (mut served, model) = setup();
    let key = format!("/{REPO}/resolve/main/onnx/decoder_model_merged_int8.onnx");
    let body = served.get_mut(&key).unwrap();
    let mid = body.len() / 2;
    body[mid] ^= 0x5a;
    let server = serve(served);
    let tmp = tempfile::tempdir().unwrap();
    let err = pull::pull(&model, &opts(tmp.path(), &server.base)).unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    assert!(matches!(err, PullError::Hash { .. }), "{msg}");
    assert!(msg.contains("decoder_model_merged_int8.onnx") && msg.contains("sha256 mismatch"));
    let dec = tmp.path().join("onnx/decoder_model_merged_int8.onnx");
    assert!(!dec.exists());
    assert!(!tmp
        .path()
        .join("onnx/decoder_model_merged_int8.onnx.part")
        .exists());
    // Files before it are complete and verified.
    assert!(tmp.path().join("onnx/embed_tokens_int8.onnx").is_file());
}

#[test]
fn a_cut_off_download_resumes_with_a_range_request() {
    let (served, model) = setup();
    let path = "onnx/vision_encoder_int8.onnx";
    let full = std::fs::read(fixture().join(path)).unwrap();
    let server = serve(served);
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("onnx")).unwrap();
    let cut = full.len() / 3;
    std::fs::write(tmp.path().join(format!("{path}.part")), &full[..cut]).unwrap();
    let reports = pull::pull(&model, &opts(tmp.path(), &server.base)).unwrap();
    let r = reports.iter().find(|r| r.path == path).unwrap();
    assert_eq!(r.resumed_from, cut as u64);
    assert_eq!(std::fs::read(tmp.path().join(path)).unwrap(), full);
    let log = server.log.lock().unwrap().clone();
    assert!(
        log.iter()
            .any(|l| l.contains("vision_encoder_int8.onnx") && l.contains(&format!("Some({cut})"))),
        "{log:?}"
    );

    // A .part holding wrong bytes: resumed, the hash fails, nothing lands; the next pull is clean.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("onnx")).unwrap();
    std::fs::write(tmp.path().join(format!("{path}.part")), vec![0u8; cut]).unwrap();
    let err = pull::pull(&model, &opts(tmp.path(), &server.base)).unwrap_err();
    assert!(matches!(err, PullError::Hash { .. }), "{err}");
    assert!(!tmp.path().join(path).exists());
    assert!(!tmp.path().join(format!("{path}.part")).exists());
    pull::pull(&model, &opts(tmp.path(), &server.base)).unwrap();
    assert_eq!(std::fs::read(tmp.path().join(path)).unwrap(), full);
}

#[test]
fn a_changed_file_after_trust_on_first_use_is_refused() {
    let (served, model) = setup();
    let server = serve(served.clone());
    let tmp = tempfile::tempdir().unwrap();
    pull::pull(&model, &opts(tmp.path(), &server.base)).unwrap();
    // The server now sends a different tokenizer.json; the local copy is gone.
    let mut changed = served;
    changed
        .get_mut(&format!("/{REPO}/resolve/main/tokenizer.json"))
        .unwrap()
        .extend_from_slice(b" ");
    let server2 = serve(changed);
    std::fs::remove_file(tmp.path().join("tokenizer.json")).unwrap();
    let err = pull::pull(&model, &opts(tmp.path(), &server2.base)).unwrap_err();
    assert!(matches!(err, PullError::Hash { .. }), "{err}");
    assert!(err.to_string().contains(pull::LOCK_FILE));
    assert!(!tmp.path().join("tokenizer.json").exists());
}

#[test]
fn missing_files_and_unknown_variants_are_clear_errors() {
    let (mut served, model) = setup();
    served.remove(&format!("/{REPO}/resolve/main/tokenizer.json"));
    let server = serve(served);
    let tmp = tempfile::tempdir().unwrap();
    let msg = pull::pull(&model, &opts(tmp.path(), &server.base))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("tokenizer.json") && msg.contains("404"),
        "{msg}"
    );
    let mut o = opts(tmp.path(), &server.base);
    o.suffix = "_q4".into();
    let msg = pull::pull(&model, &o).unwrap_err().to_string();
    assert!(msg.contains("_q4"), "{msg}");
}

#[test]
fn the_cli_pulls_from_a_mirror_with_a_manifest() {
    let (served, model) = setup();
    let server = serve(served);
    let tmp = tempfile::tempdir().unwrap();
    let manifest = tmp.path().join("manifest.json");
    std::fs::write(&manifest, serde_json::to_string(&model).unwrap()).unwrap();
    let dir = tmp.path().join("m");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lookout"))
        .args(["models", "pull", "--manifest"])
        .arg(&manifest)
        .args(["--variant", "int8", "--json", "--dir"])
        .arg(&dir)
        .env("LOOKOUT_MODEL_MIRROR", &server.base)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("WARNING") && stderr.contains("no published sha256"),
        "{stderr}"
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), COMMON.len() + 1 + GRAPHS.len());
    assert!(dir.join("onnx/decoder_model_merged_int8.onnx").is_file());

    // Unknown names fail with the list of known ones.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lookout"))
        .args(["models", "pull", "no-such-model", "--dir"])
        .arg(tmp.path().join("x"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("smolvlm-256m"));
}
