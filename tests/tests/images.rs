//! The images `images/build.sh` builds (`.ci/run` runs it before the tests): the recorder's
//! records a SIPREC call as its demo does, as user 65532, writing only to its spool and store;
//! the operator's prints its CRDs. Run with buildah's chroot isolation, as they were built
//! (this machine's OCI runtime cannot start containers: images/build.sh says why).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use opname_tests::{Proc, free_port, free_port_block, http_get, require, wait_until};

fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// A working container of `image`, removed on drop.
struct Working(String);

impl Working {
    fn from(image: &str) -> Self {
        require(
            "buildah",
            "apt-get install buildah (bash .ci/run builds the images)",
        );
        let out = Command::new("buildah")
            .args(["from", "--quiet", image])
            .output()
            .expect("buildah");
        assert!(
            out.status.success(),
            "{image} is missing: bash images/build.sh\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn run(&self, volumes: &[(&Path, &str)], args: &[&str]) -> Command {
        let mut cmd = Command::new("buildah");
        cmd.args(["run", "--isolation", "chroot"]);
        for (host, inside) in volumes {
            cmd.arg("--volume")
                .arg(format!("{}:{inside}", host.display()));
        }
        cmd.arg(&self.0).arg("--").args(args);
        cmd
    }

    fn config(&self) -> serde_json::Value {
        let out = Command::new("buildah")
            .args(["inspect", "--type", "container", &self.0])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Working {
    fn drop(&mut self) {
        let _ = Command::new("buildah")
            .args(["rm", &self.0])
            .stdout(Stdio::null())
            .status();
    }
}

#[test]
fn the_operator_image_prints_its_crds() {
    let op = Working::from(&format!("localhost/opname-operator:{}", version()));
    let out = op
        .run(&[], &["/usr/local/bin/opname-operator", "crd"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("recordingpolicies.opname.dev"), "{text}");
    let cfg = op.config();
    assert_eq!(cfg["OCIv1"]["config"]["User"], "65532:65532");
}

#[test]
fn the_recorder_image_records_a_call() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let rec = Working::from(&format!("localhost/opname-recorder:{}", version()));
    assert_eq!(rec.config()["OCIv1"]["config"]["User"], "65532:65532");
    for d in ["spool", "store"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    // The image's user owns only what is mounted for it, as in a pod.
    let chown = Command::new("chown")
        .args(["-R", "65532:65532"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(chown.success());
    let (sip, http, rtp) = (free_port(), free_port(), free_port_block(20));
    std::fs::write(
        dir.join("recorder.yaml"),
        format!(
            "namespace: acme\nsip:\n  listen: 127.0.0.1:{sip}\nrtp:\n  bind: 127.0.0.1\n  portMin: {rtp}\n  portMax: {}\nstore:\n  url: file:///work/store\n  prefix: recordings\nspool:\n  dir: /work/spool\nhttp:\n  listen: 127.0.0.1:{http}\npolicies:\n  - name: alice\n    user: alice@acme.example\n    identities: [\"sip:alice@acme.example\"]\n    retentionDays: 30\n",
            rtp + 19
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("recorder.log")).unwrap();
    let _server = Proc::spawn(
        "recorder image",
        rec.run(
            &[(dir, "/work")],
            &[
                "/usr/local/bin/opname-recorder",
                "serve",
                "--config",
                "/work/recorder.yaml",
            ],
        )
        .stdout(log.try_clone().unwrap())
        .stderr(log),
    );
    let http_addr = ([127, 0, 0, 1], http).into();
    assert!(
        wait_until(Duration::from_secs(30), || http_get(http_addr, "/healthz")
            .is_ok_and(|(s, _)| s == 200)),
        "the image's recorder did not start:\n{}",
        std::fs::read_to_string(dir.join("recorder.log")).unwrap_or_default()
    );
    let calls = dir.join("calls");
    std::fs::create_dir_all(&calls).unwrap();
    opname_tests::audio::speech(
        &calls,
        "caller",
        "Hello from the caller.",
        "en-us",
        0.2,
        3.0,
    );
    opname_tests::audio::speech(
        &calls,
        "callee",
        "And the callee answers.",
        "en-gb",
        1.0,
        3.0,
    );
    let out = opname_tests::sipp_call(
        ([127, 0, 0, 1], sip).into(),
        "u1",
        &calls,
        "sip:alice@acme.example",
        "sip:+31201234567@pbx.example",
        3000,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = dir.join("store");
    assert!(
        wait_until(Duration::from_secs(30), || opname_tests::stored_records(
            &store
        )
        .len()
            == 1),
        "no recording stored:\n{}",
        std::fs::read_to_string(dir.join("recorder.log")).unwrap_or_default()
    );
    let record = &opname_tests::stored_records(&store)[0];
    assert_eq!(record["user"], "alice@acme.example", "{record}");
    let audio = opname_tests::files_with(&store, ".opus");
    assert_eq!(audio.len(), 1);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(&audio[0]).unwrap().uid(),
        65532,
        "written as the image's non-root user"
    );
}
