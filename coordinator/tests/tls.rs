//! `rediss://`: the `conftag` binary against a real `redis-server` that speaks only TLS, with
//! a CA, server and client certificates made here with `rcgen`. With the CA (flag or
//! environment) submit and status work; without it, or with another CA, the connection fails
//! with an error that says TLS/certificate and names the flag, and never the password.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use testkit::{output_text as text, samples, RedisServer, ServerTls, Submit};

const PASSWORD: &str = "tls-pw-6e1d93b0";

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = p.self_signed(&key).unwrap();
    Ca { cert, key }
}

/// A leaf certificate signed by `ca`, written as `{name}.crt` / `{name}.key`.
fn leaf(dir: &Path, ca: &Ca, name: &str, client: bool) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let mut p =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    let (c, k) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

fn write_ca(dir: &Path, ca: &Ca, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, ca.cert.pem()).unwrap();
    p
}

/// `conftag` with REDIS_URL and extra environment, TLS flags cleared from the caller's env.
fn conftag(url: &str, env: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_conftag"));
    cmd.args(args)
        .env("REDIS_URL", url)
        .env("RUST_LOG", "debug")
        .env_remove("REDIS_CA_CERT")
        .env_remove("REDIS_CLIENT_CERT")
        .env_remove("REDIS_CLIENT_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// A TLS-only Redis with a server certificate of `authority` (written under `dir`) and the
/// test password.
fn tls_only_server(dir: &Path, authority: &Ca) -> RedisServer {
    let (cert, key) = leaf(dir, authority, "server", false);
    RedisServer::start_tls(
        ServerTls {
            cert,
            key,
            client_ca: None,
        },
        Some(PASSWORD),
    )
    .unwrap()
}

/// `submit` of the BoolQ samples, `--json`.
fn submit_samples() -> Submit {
    Submit::new("m", "boolq")
        .split("test")
        .data(samples("boolq.jsonl"))
        .json()
}

#[test]
fn submit_and_status_work_over_tls_with_the_ca_and_fail_clearly_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let authority = ca("conftag test CA");
    let ca_file = write_ca(d, &authority, "ca.pem");
    let redis = tls_only_server(d, &authority);
    let url = redis.url();
    assert!(url.starts_with("rediss://"), "{url}");

    // With the CA by flag: submit creates the job, status (CA from the environment) shows it.
    let mut args = vec!["--redis-ca-cert", ca_file.to_str().unwrap()];
    let submit = submit_samples();
    args.extend(submit.args());
    let o = conftag(&url, &[], &args);
    assert!(o.status.success(), "{}", text(&o));
    let created: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let id = created["jobs"][0]["id"].as_str().unwrap().to_owned();
    let o = conftag(&url, &[("REDIS_CA_CERT", &ca_file)], &["status", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["jobs"][0]["id"], id.as_str());
    assert_eq!(doc["jobs"][0]["state"], "queued");
    assert!(!text(&o).contains(PASSWORD));

    // Without the CA, or with another CA: a TLS/certificate error naming the flag.
    let other = write_ca(d, &ca("someone else's CA"), "other.pem");
    for env in [vec![], vec![("REDIS_CA_CERT", other.as_path())]] {
        let o = conftag(&url, &env, &["status"]);
        assert!(!o.status.success());
        let e = text(&o);
        assert!(
            e.contains("certificate") && e.contains("--redis-ca-cert") && e.contains("TLS"),
            "{e}"
        );
        assert!(
            e.contains(&format!("127.0.0.1:{}", redis.port())),
            "names the server: {e}"
        );
        assert!(!e.contains(PASSWORD), "password printed: {e}");
        eprintln!("refused as expected: {e}");
    }

    // Plain redis:// to the TLS port, and a CA that is not a certificate: clear, no password.
    let plain = url.replacen("rediss://", "redis://", 1);
    let o = conftag(&plain, &[], &["status"]);
    assert!(!o.status.success());
    assert!(!text(&o).contains(PASSWORD), "{}", text(&o));
    let o = conftag(&plain, &[("REDIS_CA_CERT", &ca_file)], &["status"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("not rediss://"), "{}", text(&o));
    let junk = d.join("junk.pem");
    std::fs::write(&junk, "hello").unwrap();
    let o = conftag(&url, &[("REDIS_CA_CERT", &junk)], &["status"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("junk.pem") && text(&o).contains("not a PEM CA certificate"),
        "{}",
        text(&o)
    );
    let o = conftag(
        &url,
        &[("REDIS_CA_CERT", &d.join("absent.pem"))],
        &["status"],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("absent.pem"), "{}", text(&o));

    // Nothing but the one job was written through all of that.
    let o = conftag(&url, &[("REDIS_CA_CERT", &ca_file)], &["status", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["jobs"].as_array().unwrap().len(), 1);
}

/// Workers wait for an unreachable Redis (`Queue::connect_waiting`), but a certificate they do
/// not trust fails the same way on every try: it must end the wait at once.
#[tokio::test]
async fn a_worker_does_not_wait_out_an_untrusted_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let authority = ca("conftag test CA");
    let redis = tls_only_server(dir.path(), &authority);
    let url = common::redis_conn::RedisUrl::new(redis.url());
    let err = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        common::queue::Queue::connect_waiting(&url, std::time::Duration::from_millis(200)),
    )
    .await
    .expect("an untrusted certificate is not waited out")
    .unwrap_err();
    assert!(!err.is_transient(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("--redis-ca-cert") && !text.contains(PASSWORD),
        "{text}"
    );
}

#[test]
fn rediss_to_a_plain_server_fails_without_printing_the_password() {
    let redis = RedisServer::start_with(true, Some(PASSWORD)).unwrap();
    let url = redis.url().replacen("redis://", "rediss://", 1);
    let o = conftag(&url, &[], &["status"]);
    assert!(!o.status.success());
    let e = text(&o);
    assert!(e.contains("cannot connect") && !e.contains(PASSWORD), "{e}");
}

#[test]
fn mutual_tls_needs_the_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let authority = ca("conftag test CA");
    let ca_file = write_ca(d, &authority, "ca.pem");
    let (cert, key) = leaf(d, &authority, "server", false);
    let (client_cert, client_key) = leaf(d, &authority, "client", true);
    let redis = RedisServer::start_tls(
        ServerTls {
            cert,
            key,
            client_ca: Some(ca_file.clone()),
        },
        None,
    )
    .unwrap();
    let url = redis.url();

    let o = conftag(&url, &[("REDIS_CA_CERT", &ca_file)], &["status"]);
    assert!(
        !o.status.success(),
        "no client certificate, yet: {}",
        text(&o)
    );

    let o = conftag(
        &url,
        &[],
        &[
            "--redis-ca-cert",
            ca_file.to_str().unwrap(),
            "--redis-client-cert",
            client_cert.to_str().unwrap(),
            "status",
        ],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("--redis-client-key"), "{}", text(&o));

    let tls = [
        ("REDIS_CA_CERT", ca_file.as_path()),
        ("REDIS_CLIENT_CERT", client_cert.as_path()),
        ("REDIS_CLIENT_KEY", client_key.as_path()),
    ];
    let o = conftag(&url, &tls, &submit_samples().args());
    assert!(o.status.success(), "{}", text(&o));
    let o = conftag(&url, &tls, &["status", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(doc["jobs"][0]["rows"].as_u64().unwrap() > 0, "{doc}");
}
