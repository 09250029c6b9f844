//! Packages: verified installs (directories and tarballs), resolution to a process or a
//! plugin, and nothing left behind by a bad package.

use super::*;

/// sha256 by the system's `sha256sum`, independent of the code under test.
fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum runs");
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// Writes a package directory: `files` (relative path, content or a file to copy), and a
/// `package.yaml` with `manifest` plus the checksums of the files.
fn make_package(dir: &Path, manifest: &str, files: &[(&str, PackageFile)]) -> std::path::PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let mut checksum = String::from("checksum:\n");
    for (name, content) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        match content {
            PackageFile::Text(text) => std::fs::write(&path, text).unwrap(),
            PackageFile::Copy(from) => {
                std::fs::copy(from, &path).unwrap();
            }
        }
        if name.ends_with(".sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        checksum.push_str(&format!("  {name}: {}\n", sha256sum(&path)));
    }
    std::fs::write(dir.join("package.yaml"), format!("{manifest}\n{checksum}")).unwrap();
    dir.to_path_buf()
}

enum PackageFile {
    Text(String),
    Copy(std::path::PathBuf),
}

/// The echo service as a package: the plugin, and a process launcher script.
fn echo_package(dir: &Path, version: &str) -> std::path::PathBuf {
    make_package(
        dir,
        &format!(
            "name: echo\nversion: {version}\ndescription: HTTP echo\nsupported_types: [process, module]\nprocess: {{executable_path: bin/echo.sh}}\nmodule: {{module_path: lib/libecho_plugin.so}}"
        ),
        &[
            (
                "bin/echo.sh",
                PackageFile::Text(format!(
                    "#!/bin/sh\nexec {} \"$@\"\n",
                    env!("CARGO_BIN_EXE_hsu-echo")
                )),
            ),
            (
                "lib/libecho_plugin.so",
                PackageFile::Copy(support::plugin("echo_plugin")),
            ),
        ],
    )
}

/// Nothing but installed packages under `root`: no staging directories left behind.
fn leftovers(root: &Path) -> Vec<String> {
    std::fs::read_dir(root)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

#[actix_rt::test]
async fn packages_install_verified_and_resolve_to_a_process_or_a_plugin() -> TestResult {
    let dir = TempDir::new("packages");
    let root = dir.0.join("packages");
    let mut config = support::config_in(&dir);
    config.packages_directory = root.clone();
    let (master, _watch) = support::launch(config).await;

    for version in ["1.2.0", "1.10.0"] {
        let source = echo_package(&dir.0.join(format!("src-{version}")), version);
        let installed = master.send(hsu::InstallPackage(source)).await??;
        assert_eq!(installed.path, root.join("echo").join(version));
        assert!(installed.path.join("lib/libecho_plugin.so").is_file());
    }
    // Reinstalling a version with the same files is fine.
    let again = master
        .send(hsu::InstallPackage(dir.0.join("src-1.2.0")))
        .await??;
    assert_eq!(again.manifest.version, "1.2.0");

    // `name:version` as a process; `name` (the newest, 1.10.0) as a plugin.
    let process = WorkerConfig::from_yaml(
        "{id: proc, type: process, process_type: integrated, package: 'echo:1.2.0', config: {port: 0}}",
    )?;
    echo_scenario(&master, process, Deployment::Integrated, true).await?;
    let d = master.send(GetWorkerState(id("proc"))).await??;
    assert!(
        d.executable_path.contains("/echo/1.2.0/bin/echo.sh"),
        "{d:?}"
    );

    let plugin = WorkerConfig::from_yaml(
        "{id: plug, type: module, package: echo, config: {port: 0}, health_check: {interval: 20ms}}",
    )?;
    echo_scenario(&master, plugin, Deployment::Plugin, false).await?;
    let d = master.send(GetWorkerState(id("plug"))).await??;
    assert!(
        d.module
            .unwrap()
            .module_name
            .contains("/echo/1.10.0/lib/libecho_plugin.so"),
        "newest version"
    );

    // A type the package does not support; a package that is not installed.
    let source = make_package(
        &dir.0.join("src-tool"),
        "name: tool\nversion: 0.1.0\nsupported_types: [process]\nprocess: {executable_path: run.sh}",
        &[("run.sh", PackageFile::Text("#!/bin/sh\nexec sleep 60\n".into()))],
    );
    master.send(hsu::InstallPackage(source)).await??;
    let err = master
        .send(AddWorker(WorkerConfig::from_yaml(
            "{id: m, type: module, package: tool}",
        )?))
        .await?
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("package tool:0.1.0 supports process, not `module`"),
        "{text}"
    );
    let err = master
        .send(AddWorker(WorkerConfig::from_yaml(
            "{id: n, type: process, package: 'echo:9.9.9'}",
        )?))
        .await?
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("package `echo:9.9.9` is not installed")
            && text.contains("echo:1.2.0, echo:1.10.0, tool:0.1.0"),
        "{text}"
    );
    assert!(leftovers(&root).is_empty(), "{:?}", leftovers(&root));
    Ok(())
}

#[actix_rt::test]
async fn a_bad_package_installs_nothing() -> TestResult {
    let dir = TempDir::new("bad-packages");
    let root = dir.0.join("packages");
    let mut config = support::config_in(&dir);
    config.packages_directory = root.clone();
    let (master, _watch) = support::launch(config).await;
    let manifest = "name: tool\nversion: 1.0.0\nsupported_types: [process]\nprocess: {executable_path: run.sh}";
    let good = || {
        make_package(
            &dir.0.join("src"),
            manifest,
            &[
                (
                    "run.sh",
                    PackageFile::Text("#!/bin/sh\nexec sleep 60\n".into()),
                ),
                ("share/data.txt", PackageFile::Text("data\n".into())),
            ],
        )
    };

    // A file changed after the manifest was written.
    let source = good();
    std::fs::write(source.join("share/data.txt"), "tampered\n")?;
    let err = master.send(hsu::InstallPackage(source)).await?.unwrap_err();
    let text = hsu::error_chain(&err);
    assert_eq!(err.kind(), ErrorKind::Validation, "{text}");
    assert!(
        text.contains("package tool:1.0.0: checksum mismatch for `share/data.txt`"),
        "{text}"
    );

    // A listed file missing; an unlisted file present.
    let source = good();
    std::fs::remove_file(source.join("share/data.txt"))?;
    let text = hsu::error_chain(&master.send(hsu::InstallPackage(source)).await?.unwrap_err());
    assert!(
        text.contains("`share/data.txt` is listed in `checksum` but missing"),
        "{text}"
    );
    let source = good();
    std::fs::write(source.join("extra"), "x")?;
    let text = hsu::error_chain(&master.send(hsu::InstallPackage(source)).await?.unwrap_err());
    assert!(
        text.contains("`extra` is not listed in `checksum`"),
        "{text}"
    );

    // A manifest error names the field.
    let source = good();
    let yaml = std::fs::read_to_string(source.join("package.yaml"))?;
    std::fs::write(source.join("package.yaml"), yaml.replace("1.0.0", "one"))?;
    let text = hsu::error_chain(&master.send(hsu::InstallPackage(source)).await?.unwrap_err());
    assert!(
        text.contains("`version`: \"one\" must be dotted numbers"),
        "{text}"
    );

    assert!(!root.join("tool").exists(), "nothing installed");
    assert!(leftovers(&root).is_empty(), "{:?}", leftovers(&root));

    // The good one installs; the same version with other files is refused.
    master.send(hsu::InstallPackage(good())).await??;
    let source = make_package(
        &dir.0.join("src"),
        manifest,
        &[(
            "run.sh",
            PackageFile::Text("#!/bin/sh\nexec sleep 61\n".into()),
        )],
    );
    let err = master.send(hsu::InstallPackage(source)).await?.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(
        root.join("tool/1.0.0/share/data.txt").is_file(),
        "old files kept"
    );
    assert!(leftovers(&root).is_empty(), "{:?}", leftovers(&root));
    Ok(())
}

#[test]
fn hsu_package_installs_a_tarball_lists_and_removes() {
    let dir = TempDir::new("package-cli");
    let source = make_package(
        &dir.0.join("tool-2.0.0"),
        "name: tool\nversion: 2.0.0\ndescription: a tool\nsupported_types: [process]\nprocess: {executable_path: run.sh}",
        &[("run.sh", PackageFile::Text("#!/bin/sh\nexec sleep 60\n".into()))],
    );
    let tarball = dir.0.join("tool.tar.gz");
    let status = Command::new("tar")
        .arg("czf")
        .arg(&tarball)
        .arg("-C")
        .arg(&dir.0)
        .arg("tool-2.0.0")
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::remove_dir_all(source).unwrap();
    let root = dir.0.join("root");
    let hsu = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_hsu"))
            .args(args)
            .arg("--root")
            .arg(&root)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = hsu(&["package", "install", tarball.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("installed tool:2.0.0"), "{out}");
    let installed = root.join("tool/2.0.0/run.sh");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&installed).unwrap().permissions().mode() & 0o111,
        0o111,
        "executable bits kept"
    );
    let (code, out, _) = hsu(&["package", "list"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("tool:2.0.0\tprocess\t"), "{out}");
    assert!(out.contains("a tool"), "{out}");
    let (code, _, err) = hsu(&["package", "remove", "tool:3.0.0"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("package `tool:3.0.0` is not installed"),
        "{err}"
    );
    let (code, out, _) = hsu(&["package", "remove", "tool"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("removed tool:2.0.0"), "{out}");
    assert!(!root.join("tool").exists());
    let (_, out, _) = hsu(&["package", "list"]);
    assert!(out.contains("no packages"), "{out}");
}

#[test]
fn packages_lose_setuid_bits_and_refuse_symlinks() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("package-hostile");
    let root = dir.0.join("root");
    let manifest =
        "name: sly\nversion: 1.0.0\nsupported_types: [process]\nprocess: {executable_path: run.sh}";
    let install = |source: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_hsu"))
            .args(["package", "install"])
            .arg(source)
            .arg("--root")
            .arg(&root)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // A setuid executable in a tarball: installed, without the bit.
    let source = make_package(
        &dir.0.join("sly-1.0.0"),
        manifest,
        &[(
            "run.sh",
            PackageFile::Text("#!/bin/sh\nexec sleep 60\n".into()),
        )],
    );
    std::fs::set_permissions(
        source.join("run.sh"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    let tarball = dir.0.join("sly.tar");
    let status = Command::new("tar")
        .arg("cf")
        .arg(&tarball)
        .arg("-C")
        .arg(&dir.0)
        .arg("sly-1.0.0")
        .status()
        .unwrap();
    assert!(status.success());
    let (code, err) = install(&tarball);
    assert_eq!(code, Some(0), "{err}");
    let mode = std::fs::metadata(root.join("sly/1.0.0/run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7000, 0, "no setuid/setgid/sticky: {mode:o}");
    assert_eq!(mode & 0o111, 0o111, "still executable: {mode:o}");

    // A symlink in a package directory (here to a file outside it): refused, nothing left.
    let secret = dir.0.join("secret");
    std::fs::write(&secret, "not for the package").unwrap();
    let linked = make_package(
        &dir.0.join("linked"),
        "name: linked\nversion: 1.0.0\nsupported_types: [process]\nprocess: {executable_path: run.sh}",
        &[("run.sh", PackageFile::Text("#!/bin/sh\n".into()))],
    );
    std::os::unix::fs::symlink(&secret, linked.join("extra")).unwrap();
    let (code, err) = install(&linked);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("extra") && err.contains("is a symlink"),
        "{err}"
    );
    // The same symlink inside a tarball.
    let tarball = dir.0.join("linked.tar");
    let status = Command::new("tar")
        .arg("cf")
        .arg(&tarball)
        .arg("-C")
        .arg(&dir.0)
        .arg("linked")
        .status()
        .unwrap();
    assert!(status.success());
    let (code, err) = install(&tarball);
    assert_eq!(code, Some(1));
    assert!(err.contains("is a symlink"), "{err}");
    assert!(!root.join("linked").exists());
    assert!(leftovers(&root).is_empty(), "{:?}", leftovers(&root));
}
