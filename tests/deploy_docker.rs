//! examples/deploy/docker/Dockerfile. Its runtime stage installs only FFmpeg's runtime libraries, so the first
//! check is that those are all the binary needs: every shared library the built `roomgate` loads belongs to a
//! Debian package the runtime stage installs or that Debian's slim image already has (checked with `ldd` and
//! `dpkg -S` on this Debian machine, no docker needed). Then, only where a docker daemon answers, the image is
//! built and run, and its healthcheck must report healthy; without one the test says it skipped that part.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DOCKERFILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/deploy/docker/Dockerfile");

/// Packages every `debian:bookworm-slim` image has (Priority: required), which the runtime stage may rely on.
const IN_SLIM: &[&str] = &[
    "libc6",
    "libgcc-s1",
    "libstdc++6",
    "zlib1g",
    "libzstd1",
    "liblzma5",
    "libbz2-1.0",
];

/// The packages the last stage's `apt-get install` lines name.
fn runtime_packages(dockerfile: &str) -> BTreeSet<String> {
    let last_stage = dockerfile.rsplit("\nFROM ").next().unwrap();
    let joined = last_stage.replace("\\\n", " ");
    joined
        .lines()
        .filter_map(|l| l.split_once("apt-get install").map(|(_, rest)| rest))
        .flat_map(|rest| rest.split("&&").next().unwrap().split_whitespace())
        .filter(|w| !w.starts_with('-'))
        .map(str::to_owned)
        .collect()
}

/// The Debian package owning each shared library `binary` links directly (its ELF `NEEDED` entries from
/// `readelf`, located with `ldd`, owned per `dpkg -S`). Libraries those load in turn come with their packages'
/// own dependencies.
fn library_packages(binary: &Path) -> BTreeSet<(String, String)> {
    let readelf = Command::new("readelf")
        .arg("-d")
        .arg(binary)
        .output()
        .expect("readelf runs");
    let needed: BTreeSet<String> = String::from_utf8_lossy(&readelf.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next().map(str::to_owned))
        .collect();
    assert!(needed.iter().any(|n| n.starts_with("libavcodec")), "{needed:?}");
    let ldd = Command::new("ldd").arg(binary).output().expect("ldd runs");
    assert!(ldd.status.success(), "ldd {}", binary.display());
    let mut owned = BTreeSet::new();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let Some((name, rest)) = line.trim().split_once(" => ") else {
            continue; // linux-vdso, the loader itself
        };
        if !needed.contains(name) {
            continue;
        }
        let path = rest.split_whitespace().next().unwrap();
        let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.into());
        // Debian's merged /usr: dpkg knows some files under /lib, others under /usr/lib.
        let candidates = [
            real.display().to_string(),
            path.to_owned(),
            path.trim_start_matches("/usr").to_owned(),
            format!("/usr{path}"),
        ];
        let package = candidates.iter().find_map(|p| {
            let out = Command::new("dpkg")
                .args(["-S", p])
                .stderr(Stdio::null())
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            out.status
                .success()
                .then(|| text.split(':').next().unwrap().trim().to_owned())
        });
        let package = package.unwrap_or_else(|| panic!("no Debian package owns {path} (needed by roomgate)"));
        owned.insert((package, path.to_owned()));
    }
    owned
}

#[test]
fn the_runtime_stage_installs_every_library_the_binary_needs() {
    let dockerfile = std::fs::read_to_string(DOCKERFILE).unwrap();
    let installed = runtime_packages(&dockerfile);
    assert!(
        installed.contains("libavcodec59"),
        "parsed the runtime stage: {installed:?}"
    );
    let binary = Path::new(env!("CARGO_BIN_EXE_roomgate"));
    let missing: Vec<_> = library_packages(binary)
        .into_iter()
        .filter(|(pkg, _)| !installed.contains(pkg) && !IN_SLIM.contains(&pkg.as_str()))
        .collect();
    // A library of a package that another installed package depends on comes along (libx264 with libavcodec),
    // but roomgate loading it directly means the Dockerfile should say so.
    assert!(
        missing.is_empty(),
        "the Dockerfile's runtime stage does not install (package, library): {missing:?}"
    );
}

fn docker_answers() -> bool {
    Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Build the image and run it: its HEALTHCHECK (curl /healthz) must turn healthy. Needs a docker daemon and
/// network for the base images; skipped (saying so) where there is none, as on the CI machines.
#[test]
fn the_image_builds_and_turns_healthy_where_docker_runs() {
    if !docker_answers() {
        eprintln!("SKIPPED: no docker daemon answers `docker info`; the image build was not tried");
        return;
    }
    let tag = format!("roomgate-test:{}", std::process::id());
    let built = Command::new("docker")
        .args(["build", "-q", "-f", DOCKERFILE, "-t", &tag, env!("CARGO_MANIFEST_DIR")])
        .status()
        .unwrap();
    assert!(built.success(), "docker build");
    let run = Command::new("docker")
        .args(["run", "-d", "--rm", &tag])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "docker run: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let id = String::from_utf8_lossy(&run.stdout).trim().to_owned();
    let deadline = Instant::now() + Duration::from_secs(90);
    let health = loop {
        let out = Command::new("docker")
            .args(["inspect", "-f", "{{.State.Health.Status}}", &id])
            .output()
            .unwrap();
        let status = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if status != "starting" || Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let _ = Command::new("docker").args(["rm", "-f", &id]).status();
    let _ = Command::new("docker").args(["rmi", &tag]).status();
    assert_eq!(health, "healthy", "the container's healthcheck");
}
