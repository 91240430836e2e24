import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Two real users (made with useradd when run as root): owners change only their own jobs; admin calls
/// are refused to them; jobs run as their owners.
@Suite(.serialized) struct PermissionTests {
    static let users = ["allot-e2e-alice", "allot-e2e-bob"]

    static var isRoot: Bool { getuid() == 0 }

    static func ensureUsers() throws {
        for u in users where getpwnam(u) == nil {
            let r = try Harness.run("/usr/sbin/useradd", ["--no-create-home", "--shell", "/bin/sh", u], absolute: true)
            guard r.status == 0 else { throw FixtureError("useradd \(u) failed: \(r.stderr)") }
        }
    }

    @Test(.enabled(if: PermissionTests.isRoot, "needs root to create users"))
    func ownersChangeOnlyTheirOwnJobsAndAdminCallsAreRefused() throws {
        try Self.ensureUsers()
        let (alice, bob) = (Self.users[0], Self.users[1])
        let d = try DaemonFixture()
        let j = try d.submit(
            ["--workdir", "/tmp", "--env", "SECRET=s3", "--", "sh", "-c", "id -un; sleep 30"],
            as: alice
        )
        try d.wait(j, for: "running")
        // The job runs as alice.
        var log = ""
        for _ in 0..<100 where !log.hasPrefix(alice) {
            usleep(100_000)
            log = d.ctl(["logs", String(j)], as: alice).stdout
        }
        #expect(log.hasPrefix(alice), "\(log)")
        // bob sees it, without its command and environment, and cannot touch it.
        let seen = d.ctl(["show", String(j), "--json"], as: bob)
        #expect(seen.status == 0)
        let object = try JSONSerialization.jsonObject(with: Data(seen.stdout.utf8)) as! [String: Any]
        #expect(object["command"] == nil && object["env"] == nil)
        #expect(object["user"] as? String == alice)
        let cancel = d.ctl(["cancel", String(j)], as: bob)
        #expect(cancel.status == 4)
        #expect(cancel.stderr.contains("belongs to \(alice)"), "\(cancel.stderr)")
        #expect(d.ctl(["hold", String(j)], as: bob).status == 4)
        #expect(d.ctl(["logs", String(j)], as: bob).status == 4)
        // Admin-only calls.
        let drain = d.ctl(["drain", "a1", "--reason", "mine"], as: bob)
        #expect(drain.status == 4)
        #expect(drain.stderr.contains("admin"), "\(drain.stderr)")
        #expect(d.ctl(["reload"], as: bob).status == 4)
        // The owner sees everything and may cancel.
        let own =
            try JSONSerialization.jsonObject(with: Data(d.ctl(["show", String(j), "--json"], as: alice).stdout.utf8))
            as! [String: Any]
        #expect((own["env"] as? [String: String])?["SECRET"] == "s3")
        #expect(d.ctl(["cancel", String(j)], as: alice).status == 0)
        try d.wait(j, for: "cancelled")
        // root (an admin) may drain.
        #expect(d.ctl(["drain", "a1", "--reason", "maintenance"]).status == 0)
    }

    @Test(.enabled(if: PermissionTests.isRoot, "needs root to create users and groups"))
    func aUserPutInTheAdminGroupIsAnAdminAtOnceAndStopsBeingOneWhenTakenOut() throws {
        try Self.ensureUsers()
        let bob = Self.users[1]
        let group = "allot-e2e-ops"
        if getgrnam(group) == nil {
            let r = try Harness.run("/usr/sbin/groupadd", [group], absolute: true)
            guard r.status == 0 else { throw FixtureError("groupadd failed: \(r.stderr)") }
        }
        _ = try Harness.run("/usr/bin/gpasswd", ["-d", bob, group], absolute: true)
        let d = try DaemonFixture(daemon: "admin_group = \"\(group)\"\n")
        #expect(d.ctl(["drain", "a1", "--reason", "x"], as: bob).status == 4)
        // allotd knows who callers are without reading the user and group files at every connection, yet
        // a change to them counts from the next call.
        let add = try Harness.run("/usr/sbin/usermod", ["-a", "-G", group, bob], absolute: true)
        try #require(add.status == 0, "usermod failed: \(add.stderr)")
        let drain = d.ctl(["drain", "a1", "--reason", "ops"], as: bob)
        #expect(drain.status == 0, "\(drain.stderr)")
        let remove = try Harness.run("/usr/bin/gpasswd", ["-d", bob, group], absolute: true)
        try #require(remove.status == 0, "gpasswd failed: \(remove.stderr)")
        #expect(d.ctl(["resume", "a1"], as: bob).status == 4)
        #expect(d.ctl(["resume", "a1"]).status == 0)
    }
}
