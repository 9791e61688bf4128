//! The operator's store access with a cloud identity instead of keys: a projected
//! ServiceAccount token in a web identity token file (EKS IRSA), exchanged at an STS stand-in
//! (HTTPS, as object_store requires) for session credentials, with which the operator writes the
//! bucket's lifecycle rules to Garage (which checks every signature), reads them back, and signs
//! a download link that Garage honours. A token the STS refuses fails the enforcement with STS's
//! answer; nothing falls back to keys.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use object_store::ObjectStoreExt;
use opname_operator::export::links::{LinkSigner, TEMPORARY_FLOOR};
use opname_operator::retention::lifecycle::{Bucket, enforce};
use opname_operator::settings::StoreSettings;
use opname_tests::garage::Garage;
use opname_tests::{Proc, free_port, wait_until};

const ROLE: &str = "arn:aws:iam::123456789012:role/opname-operator";
const SESSION_TOKEN: &str = "opname-test-session-token";

#[test]
fn lifecycle_rules_and_links_with_a_web_identity_token_file() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    opname_tests::pki::certificate(dir, "ca", "sts", "localhost", "serverAuth");
    // The pod's trust store, as a private STS endpoint's CA would be mounted (rustls'
    // platform verifier reads SSL_CERT_FILE). Set before any thread or TLS client exists.
    // SAFETY: this test binary holds this one test, and nothing runs beside it yet.
    unsafe { std::env::set_var("SSL_CERT_FILE", dir.join("ca.pem")) };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let garage = Garage::start(dir);
    let token_file = dir.join("token");
    std::fs::write(
        &token_file,
        "eyJhbGciOiJSUzI1NiJ9.projected-service-account-token",
    )
    .unwrap();
    let (port, log) = (free_port(), dir.join("sts.log"));
    let _sts = Proc::spawn(
        "sts",
        Command::new("python3")
            .arg(opname_tests::workspace().join("tests/sts/sts.py"))
            .args(["--port", &port.to_string()])
            .arg("--cert")
            .arg(dir.join("sts.pem"))
            .arg("--key")
            .arg(dir.join("sts.key"))
            .args(["--token", &std::fs::read_to_string(&token_file).unwrap()])
            .args([
                "--role",
                ROLE,
                "--key-id",
                &garage.key_id,
                "--secret",
                &garage.secret,
            ])
            .args(["--session-token", SESSION_TOKEN])
            .arg("--log")
            .arg(&log),
    );
    assert!(
        wait_until(Duration::from_secs(10), || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "the STS stand-in did not start"
    );
    // What the chart gives an IRSA pod: no keys, a token file, a role, the STS endpoint.
    let settings = |token: &std::path::Path| StoreSettings {
        url: "s3://opname".into(),
        prefix: "recordings".into(),
        credentials_secret: None,
        env: [
            ("AWS_REGION", "garage".to_string()),
            ("AWS_ENDPOINT", format!("http://{}", garage.s3)),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token.display().to_string()),
            ("AWS_ROLE_ARN", ROLE.into()),
            ("AWS_ROLE_SESSION_NAME", "opname-operator".into()),
            ("AWS_ENDPOINT_URL_STS", format!("https://localhost:{port}/")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    };
    assert!(
        std::env::var("AWS_ACCESS_KEY_ID").is_err(),
        "no static keys in the test's environment"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = settings(&token_file);
        let bucket = Bucket::from_settings(&s).unwrap().unwrap();
        let done = enforce(&bucket, "recordings", &BTreeSet::from([30]), 14)
            .await
            .expect("lifecycle rules written and read back with the session credentials");
        assert!(done.written);
        let classes: Vec<Option<u32>> = done.rules.iter().map(|r| r.class()).collect();
        assert!(classes.contains(&Some(30)), "{:?}", done.rules);
        let objects = bucket.objects();
        let key = "exports/acme/october/part-1.zip";
        objects
            .put(&key.into(), b"zip bytes".to_vec().into())
            .await
            .unwrap();

        let signer = LinkSigner::from_settings(&s, None).unwrap().unwrap();
        let now = jiff::Timestamp::now();
        let (url, expires) = signer
            .sign(key, Some(Duration::from_secs(72 * 3600)), now)
            .await
            .unwrap();
        assert!(
            url.contains(&format!("X-Amz-Credential={}", garage.key_id)),
            "signed with the session's key: {url}"
        );
        assert!(
            url.contains(&format!("X-Amz-Security-Token={SESSION_TOKEN}")),
            "{url}"
        );
        assert_eq!(
            expires.duration_since(now).as_secs(),
            TEMPORARY_FLOOR.as_secs() as i64,
            "a session's end is unknown: only what object_store guarantees is promised"
        );
        let got = reqwest::get(&url).await.unwrap();
        assert_eq!(got.status(), 200, "Garage honours the link");
        assert_eq!(got.bytes().await.unwrap().as_ref(), b"zip bytes");

        // A token the STS does not accept: the enforcement fails with its answer.
        let wrong = dir.join("wrong-token");
        std::fs::write(&wrong, "someone-else").unwrap();
        let refused = Bucket::from_settings(&settings(&wrong)).unwrap().unwrap();
        let err = enforce(&refused, "recordings", &BTreeSet::from([30]), 14)
            .await
            .expect_err("no credentials, no rules");
        assert!(
            format!("{err:?}").contains("AccessDenied") || err.to_string().contains("403"),
            "{err:?}"
        );
    });
    let calls: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let granted = calls.iter().filter(|c| c["granted"] == true).count();
    assert!(granted >= 1, "{calls:?}");
    let first = &calls[0]["query"];
    assert_eq!(first["RoleArn"], ROLE);
    assert_eq!(first["RoleSessionName"], "opname-operator");
    assert!(calls.iter().any(|c| c["granted"] == false));
}
