import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The units in systemd/: systemd's own checks, and allotd run by a real systemd (PID 1 of private
/// namespaces, booted by Tests/systemd-harness/boot-systemd.sh) when the tests run as root.
@Suite(.serialized) struct SystemdUnitTests {
    static let analyze = "/usr/bin/systemd-analyze"
    static var haveAnalyze: Bool { FileManager.default.isExecutableFile(atPath: analyze) }
    static var canBoot: Bool { getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/lib/systemd/systemd") }

    /// The units as `make install` writes them, with ExecStart at the built binary.
    static func installedUnits(in dir: String) throws {
        let text = try String(
            contentsOf: Harness.root.appendingPathComponent("systemd/allotd.service.in"),
            encoding: .utf8
        )
        .replacingOccurrences(of: "@BINDIR@", with: Harness.binDir.path)
        .replacingOccurrences(of: "@SYSCONFDIR@", with: "/etc")
        .replacingOccurrences(of: "@DOCDIR@", with: Harness.root.appendingPathComponent("docs").path)
        try text.write(toFile: dir + "/allotd.service", atomically: true, encoding: .utf8)
        let agent = try String(
            contentsOf: Harness.root.appendingPathComponent("systemd/allotd-agent.service.in"),
            encoding: .utf8
        )
        .replacingOccurrences(of: "@BINDIR@", with: Harness.binDir.path)
        .replacingOccurrences(of: "@SYSCONFDIR@", with: "/etc")
        .replacingOccurrences(of: "@DOCDIR@", with: Harness.root.appendingPathComponent("docs").path)
        try agent.write(toFile: dir + "/allotd-agent.service", atomically: true, encoding: .utf8)
        try FileManager.default.copyItem(
            atPath: Harness.root.appendingPathComponent("systemd/allotd.socket").path,
            toPath: dir + "/allotd.socket"
        )
    }

    @Test(.enabled(if: SystemdUnitTests.haveAnalyze, "systemd-analyze is not installed"))
    func unitsPassSystemdAnalyzeVerifyAndKeepTheirExposure() throws {
        try Harness.withTempDir { dir in
            try Self.installedUnits(in: dir.path)
            let verify = try Harness.run(
                Self.analyze,
                [
                    "verify", "--recursive-errors=no", dir.path + "/allotd.service", dir.path + "/allotd.socket",
                    dir.path + "/allotd-agent.service",
                ],
                absolute: true
            )
            #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
            #expect(verify.stderr.isEmpty, "\(verify.stderr)")
            // The exposure docs/operations.md gives (5.9): no hardening lost unnoticed.
            let security = try Harness.run(
                Self.analyze,
                ["--offline=yes", "--threshold=59", "security", dir.path + "/allotd.service"],
                absolute: true
            )
            #expect(security.status == 0, "\(security.stdout.suffix(300))\(security.stderr)")
        }
    }

    @Test(.enabled(if: SystemdUnitTests.canBoot, "needs root and systemd installed, to boot a private systemd"))
    func allotdUnderARealSystemd() throws {
        try Self.harnessScript(
            "allotd-under-systemd.sh",
            lastCheck: "ok - watchdog: a stopped allotd is killed and restarted"
        )
    }

    /// Runs a script of Tests/systemd-harness on the built binaries: every "ok" line must be there, no
    /// "not ok" (exit 77: this machine cannot boot systemd in namespaces — cgroup2, unshare —, said so).
    static func harnessScript(_ name: String, lastCheck: String) throws {
        let script = Harness.root.appendingPathComponent("Tests/systemd-harness/\(name)").path
        let r = try Harness.run(script, [Harness.binDir.path], absolute: true)
        if r.status == 77 {
            print("skipped: \(r.stdout)\(r.stderr)")
            return
        }
        let failures = r.stdout.split(separator: "\n").filter { $0.hasPrefix("not ok") }
        #expect(r.status == 0 && failures.isEmpty, "\(r.stdout)\n\(r.stderr)")
        #expect(r.stdout.contains(lastCheck), "\(r.stdout)")
    }

    /// The Debian package on a machine without the build tree: install, upgrade with a running job, remove,
    /// purge (Tests/systemd-harness/package-lifecycle.sh).
    @Test(.enabled(if: SystemdUnitTests.canBoot, "needs root and systemd installed, to boot a private systemd"))
    func debianPackageInstallsUpgradesAndPurges() throws {
        try Self.harnessScript("package-lifecycle.sh", lastCheck: "ok - purge: /var/lib/allot is removed")
    }
}
