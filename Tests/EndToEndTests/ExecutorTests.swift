import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Jobs run for real: as their owners (two real users when run as root), with their whole process tree
/// killed when they are stopped, and their ends recorded across daemon crashes.
@Suite(.serialized) struct ExecutorTests {
    static var isRoot: Bool { getuid() == 0 }
    static let group = "allot-e2e-team"

    /// Two users; alice also in a supplementary group.
    static func ensureUsersAndGroup() throws {
        try PermissionTests.ensureUsers()
        if getgrnam(group) == nil {
            let r = try Harness.run("/usr/sbin/groupadd", [group], absolute: true)
            guard r.status == 0 else { throw FixtureError("groupadd failed: \(r.stderr)") }
        }
        let r = try Harness.run("/usr/sbin/usermod", ["-a", "-G", group, PermissionTests.users[0]], absolute: true)
        guard r.status == 0 else { throw FixtureError("usermod failed: \(r.stderr)") }
    }

    static func id(_ flag: String, _ user: String) throws -> String {
        try Harness.run("/usr/bin/id", [flag, user], absolute: true).stdout.trimmingCharacters(
            in: .whitespacesAndNewlines
        )
    }

    @Test(.enabled(if: ExecutorTests.isRoot, "needs root to create users and switch to them"))
    func jobsRunAsTheirOwnersWithTheirGroupsAndACleanEnvironment() throws {
        try Self.ensureUsersAndGroup()
        let (alice, bob) = (PermissionTests.users[0], PermissionTests.users[1])
        let d = try DaemonFixture(start: false)
        d.environment = ["ALLOTD_SECRET": "daemon-only"]
        try d.start()
        let script = "id -u; id -g; id -G; pwd; echo \"home=$HOME user=$USER secret=${ALLOTD_SECRET:-none}\""
        let a = try d.submit(["--workdir", "/tmp", "--", "sh", "-c", script], as: alice)
        let b = try d.submit(["--workdir", "/tmp", "--", "sh", "-c", script], as: bob)
        try d.wait(a, for: "completed")
        try d.wait(b, for: "completed")
        for (job, user) in [(a, alice), (b, bob)] {
            let log = d.ctl(["logs", String(job)], as: user)
            #expect(log.status == 0, "\(log.stderr)")
            let lines = log.stdout.split(separator: "\n").map(String.init)
            #expect(lines.count == 5, "\(log.stdout)")
            guard lines.count == 5 else { continue }
            #expect(lines[0] == (try Self.id("-u", user)))
            #expect(lines[1] == (try Self.id("-g", user)))
            #expect(Set(lines[2].split(separator: " ")) == Set((try Self.id("-G", user)).split(separator: " ")))
            #expect(lines[3] == "/tmp")
            #expect(lines[4].contains("user=\(user)") && lines[4].contains("secret=none"), "\(lines[4])")
            // The log file belongs to the owner; the other user cannot read it through allotctl.
            let path = "\(d.stateDir)/logs/\(job).log"
            var st = stat()
            let uid = UInt32(try Self.id("-u", user))!
            #expect(stat(path, &st) == 0)
            #expect(st.st_uid == uid)
            #expect(st.st_mode & 0o007 == 0, "log mode \(String(st.st_mode, radix: 8))")
        }
        // alice is in the supplementary group; bob is not.
        let teamGID = try Harness.run("/usr/bin/getent", ["group", Self.group], absolute: true).stdout
            .split(separator: ":")[2]
        #expect(
            d.ctl(["logs", String(a)], as: alice).stdout.split(separator: "\n")[2].split(separator: " ").contains(
                teamGID
            )
        )
        let denied = d.ctl(["logs", String(a)], as: bob)
        #expect(denied.status == 4, "\(denied.stdout)")
        #expect(denied.stderr.contains("owner"), "\(denied.stderr)")
    }

    @Test(.enabled(if: ExecutorTests.isRoot, "needs root to create users and switch to them"))
    func outputFileIsOpenedAsTheOwnerAndBadDirectoriesFailWithAReason() throws {
        try Self.ensureUsersAndGroup()
        let alice = PermissionTests.users[0]
        let d = try DaemonFixture()
        let mine = d.dir.appendingPathComponent("alice-out").path
        mkdir(mine, 0o755)
        chown(mine, UInt32(try Self.id("-u", alice))!, UInt32(try Self.id("-g", alice))!)
        let ok = try d.submit(
            ["--workdir", mine, "--output", "out.txt", "--", "sh", "-c", "echo to-my-file"],
            as: alice
        )
        try d.wait(ok, for: "completed")
        #expect((try? String(contentsOfFile: mine + "/out.txt", encoding: .utf8)) == "to-my-file\n")
        var st = stat()
        let aliceUID = UInt32(try Self.id("-u", alice))!
        #expect(stat(mine + "/out.txt", &st) == 0 && st.st_uid == aliceUID)
        #expect(d.ctl(["logs", String(ok)], as: alice).stdout == "to-my-file\n")
        // An output file in a directory alice may not write: the job fails saying so, nothing is created.
        let rootOnly = d.dir.appendingPathComponent("root-only").path
        mkdir(rootOnly, 0o755)
        let denied = try d.submit(["--workdir", "/tmp", "--output", rootOnly + "/x.txt", "--", "true"], as: alice)
        try d.wait(denied, for: "failed")
        let reason = d.job(denied)?["reason"] as? String ?? ""
        #expect(reason.contains("cannot open the output file"), "\(reason)\n\(d.runFiles(denied))")
        #expect(!FileManager.default.fileExists(atPath: rootOnly + "/x.txt"))
        // A working directory alice cannot enter is refused at submit, with the reason (one that goes away
        // before the start: NewUserTests).
        let closed = d.dir.appendingPathComponent("closed").path
        mkdir(closed, 0o700)
        let nowhere = d.ctl(["submit", "--workdir", closed, "--", "true"], as: alice)
        #expect(nowhere.status == 2, "\(nowhere.stdout)")
        #expect(nowhere.stderr.contains("\(alice) may not enter \(closed)"), "\(nowhere.stderr)")
    }

    @Test(.enabled(if: ExecutorTests.isRoot, "needs root to create and delete a user"))
    func aJobWhoseUserNoLongerExistsFailsSayingSo() throws {
        let user = "allot-e2e-gone"
        if getpwnam(user) == nil {
            let r = try Harness.run(
                "/usr/sbin/useradd",
                ["--no-create-home", "--shell", "/bin/sh", user],
                absolute: true
            )
            #expect(r.status == 0, "\(r.stderr)")
        }
        let d = try DaemonFixture()
        let j = try d.submit(["--hold", "--workdir", "/tmp", "--", "true"], as: user)
        _ = try Harness.run("/usr/sbin/userdel", [user], absolute: true)
        #expect(d.ctl(["release", String(j)]).status == 0)
        try d.wait(j, for: "failed")
        let reason = d.job(j)?["reason"] as? String ?? ""
        #expect(reason.contains("no longer exists"), "\(reason)")
    }

    @Test func aStoppedJobsWholeProcessTreeIsGoneAfterTheGrace() throws {
        let d = try DaemonFixture()
        // A leader with a child that ignores SIGTERM, and (where allotd makes cgroups, as root) a worker in
        // a session of its own, outside the job's process group.
        let script = """
            (trap '' TERM; sleep 300) & echo child=$!
            if command -v setsid >/dev/null; then setsid sh -c 'trap "" TERM; echo worker=$$; sleep 300' & fi
            trap '' TERM
            sleep 300
            """
        let j = try d.submit(["--grace", "1s", "--", "sh", "-c", script])
        try d.wait(j, for: "running")
        var pids: [Int32] = []
        var worker: Int32?
        var log = ""
        for _ in 0..<100 {
            log = d.ctl(["logs", String(j)]).stdout
            if log.contains("child=") && (log.contains("worker=") || !ExecutorTests.isRoot) { break }
            usleep(50_000)
        }
        for line in log.split(separator: "\n") {
            guard let eq = line.firstIndex(of: "="), let pid = Int32(line[line.index(after: eq)...]) else { continue }
            if line.hasPrefix("worker") { worker = pid } else { pids.append(pid) }
        }
        let leader = d.recordedPID(j, "pid")
        #expect(leader != nil, "\(d.runFiles(j))")
        if let leader { pids.append(leader) }
        #expect(pids.count >= 2, "\(log)")
        #expect(d.ctl(["cancel", String(j)]).status == 0)
        let took = try d.wait(j, for: "cancelled", timeout: 15)
        #expect(took >= 0.9, "cancelled after \(took) s: the grace was not given")
        // Only the leader's group is certain without cgroups; with them, the setsid worker too.
        // The setsid worker left the job's process group: only a cgroup (allotd as root) catches it.
        let mustBeGone = pids + (d.jobCgroupBase != nil ? [worker ?? 0] : [])
        if d.jobCgroupBase != nil { #expect(worker != nil, "\(log)") }
        defer { if let worker { kill(worker, SIGKILL) } }
        for pid in mustBeGone where pid > 1 {
            var gone = false
            for _ in 0..<40 where !gone {
                gone = kill(pid, 0) != 0
                if !gone { usleep(50_000) }
            }
            #expect(gone, "process \(pid) of the job survived its cancel\n\(log)")
        }
        let notes = d.ctl(["logs", String(j)]).stdout
        #expect(notes.contains("sent SIGTERM") && notes.contains("sent SIGKILL"), "\(notes)")
    }

    @Test func aJobStartsWithNoSignalBlockedOrIgnoredAndItsTERMTrapRuns() throws {
        let d = try DaemonFixture()
        // The job's command itself reads its signal state (a shell would block signals around its forks).
        let masks = try d.submit(["--", "grep", "-E", "SigBlk|SigIgn", "/proc/self/status"])
        try d.wait(masks, for: "completed")
        let log = d.ctl(["logs", String(masks)]).stdout
        #expect(log.contains("SigBlk") && log.contains("SigIgn"), "\(log)")
        // Standard signals 1–31: none blocked or ignored (glibc keeps its own 32 and 33 as they are).
        for line in log.split(separator: "\n") where line.hasPrefix("Sig") {
            let mask = UInt64(line.split(separator: "\t").last ?? "", radix: 16) ?? .max
            #expect(mask & 0x7fff_ffff == 0, "\(line)")
        }
        let j = try d.submit([
            "--grace", "5s", "--", "sh", "-c", "trap 'echo checkpointing; exit 0' TERM; echo up; sleep 300 & wait",
        ])
        try d.wait(j, for: "running")
        for _ in 0..<100 where !d.ctl(["logs", String(j)]).stdout.contains("up") { usleep(50_000) }
        #expect(d.ctl(["cancel", String(j)]).status == 0)
        let took = try d.wait(j, for: "cancelled")
        #expect(took < 4, "the TERM trap did not run: it waited for SIGKILL")
        #expect(d.job(j)?["exit_code"] as? Int == 0)
        #expect(d.ctl(["logs", String(j)]).stdout.contains("checkpointing\n"))
    }

    @Test func aJobWhoseSupervisorVanishesIsKilledAndFailed() throws {
        let d = try DaemonFixture()
        let j = try d.submit(["--", "sh", "-c", "sleep 300"])
        try d.wait(j, for: "running")
        let supervisor = try #require(
            d.recordedPID(j, "supervisor.pid")
        )
        var leader: Int32?
        for _ in 0..<100 where leader == nil {
            leader = d.recordedPID(j, "pid")
            usleep(20_000)
        }
        let pid = try #require(leader)
        kill(supervisor, SIGKILL)
        try d.wait(j, for: "failed")
        #expect((d.job(j)?["reason"] as? String ?? "").contains("supervisor vanished"))
        var gone = false
        for _ in 0..<40 where !gone {
            gone = kill(pid, 0) != 0
            usleep(50_000)
        }
        #expect(gone, "the job's process outlived its supervisor")
    }

    @Test func aJobLeftWithoutSupervisorWhileAllotdWasDownIsKilledAndFailedOnRestart() throws {
        let d = try DaemonFixture()
        let j = try d.submit(["--", "sh", "-c", "sleep 300"])
        try d.wait(j, for: "running")
        var leader: Int32?
        for _ in 0..<100 where leader == nil {
            leader = d.recordedPID(j, "pid")
            usleep(20_000)
        }
        let pid = try #require(leader)
        let supervisor = try #require(
            d.recordedPID(j, "supervisor.pid")
        )
        #expect(d.stop(signal: SIGKILL) == 128 + SIGKILL)
        kill(supervisor, SIGKILL)
        usleep(200_000)
        #expect(kill(pid, 0) == 0, "the job should still run: only its supervisor was killed")
        try d.start()
        try d.wait(j, for: "failed")
        #expect((d.job(j)?["reason"] as? String ?? "").contains("supervisor is gone"))
        var gone = false
        for _ in 0..<40 where !gone {
            gone = kill(pid, 0) != 0
            usleep(50_000)
        }
        #expect(gone, "the orphaned job process still holds its GPUs")
    }

    @Test func aJobStartsInsideItsOwnCgroupWhichGoesWithIt() throws {
        let d = try DaemonFixture()
        guard let base = d.jobCgroupBase, let mount = DaemonFixture.cgroup2Mount() else { return }
        // Started straight into its cgroup (clone3 with CLONE_INTO_CGROUP, or by joining it before the exec):
        // the job's very first process is already there.
        let j = try d.submit(["--", "cat", "/proc/self/cgroup"])
        try d.wait(j, for: "completed")
        let line = d.ctl(["logs", String(j)]).stdout.split(separator: "\n").first { $0.hasPrefix("0::") }
        let cgroup = base + "/job-\(j).1"
        #expect(line.map { mount + $0.dropFirst(3) } == cgroup, "\(line ?? "no cgroup v2 line")")
        #expect(!FileManager.default.fileExists(atPath: cgroup), "the run's cgroup outlived it")
    }

    /// Writes a run spec as allotd does: NUL-terminated key=value records.
    static func writeSpec(_ records: [(String, String)], in dir: String) {
        var bytes: [UInt8] = []
        for (k, v) in records { bytes += Array("\(k)=\(v)".utf8) + [0] }
        FileManager.default.createFile(atPath: dir + "/spec", contents: Data(bytes))
    }

    @Test func theSupervisorRunsASpecAndRefusesOneItCannotReadNamingWhy() throws {
        try Harness.withTempDir { tmp in
            let dir = tmp.path
            func supervise() throws -> Harness.Output { try Harness.run("allot-supervise", [dir]) }
            var r = try supervise()
            #expect(r.status == 1 && r.stderr.contains("cannot read \(dir)/spec"), "\(r.stderr)")
            Self.writeSpec([("allot-run-spec", "9")], in: dir)
            r = try supervise()
            #expect(r.status == 1 && r.stderr.contains("not a run spec of version 1"), "\(r.stderr)")
            let base: [(String, String)] = [
                ("allot-run-spec", "1"), ("id", "7"), ("run", "1"), ("uid", String(getuid())),
                ("gid", String(getgid())), ("workdir", dir), ("log", dir + "/job.log"),
                ("socket", dir + "/nobody.sock"),
            ]
            Self.writeSpec(base + [("colour", "blue"), ("arg", "true")], in: dir)
            r = try supervise()
            #expect(r.status == 1 && r.stderr.contains("unknown key colour"), "\(r.stderr)")
            Self.writeSpec(base, in: dir)
            r = try supervise()
            #expect(r.status == 1 && r.stderr.contains("no command"), "\(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: dir + "/status"))
            // A good one: the command runs in the working directory with exactly the spec's environment, its
            // output goes to the log, and the status says how it ended.
            let script = "echo \"$GREETING from $(pwd)\"; echo \"path=$PATH\"; exit 3"
            Self.writeSpec(
                base + [
                    ("env", "GREETING=a=b c"), ("env", "PATH=/usr/bin:/bin"), ("arg", "sh"), ("arg", "-c"),
                    ("arg", script),
                ],
                in: dir
            )
            r = try supervise()
            #expect(r.status == 0, "\(r.stderr)")
            let log = (try? String(contentsOfFile: dir + "/job.log", encoding: .utf8)) ?? ""
            #expect(log == "a=b c from \(dir)\npath=/usr/bin:/bin\n", "\(log)")
            var status = (try? String(contentsOfFile: dir + "/status", encoding: .utf8)) ?? ""
            #expect(status.hasPrefix("{\"exit_code\":3,\"ended_at\":"), "\(status)")
            let pid = (try? String(contentsOfFile: dir + "/pid", encoding: .utf8)) ?? ""
            #expect(pid.split(separator: " ").count == 2, "pid file: \(pid)")
            // A command that does not exist (looked up on the job's PATH): 127, with the reason.
            Self.writeSpec(base + [("env", "PATH=/nowhere"), ("arg", "sh")], in: dir)
            r = try supervise()
            #expect(r.status == 0, "\(r.stderr)")
            status = (try? String(contentsOfFile: dir + "/status", encoding: .utf8)) ?? ""
            #expect(
                status.hasPrefix("{\"exit_code\":127,\"error\":\"cannot run sh: No such file or directory\""),
                "\(status)"
            )
        }
    }

    @Test(.enabled(if: ExecutorTests.isRoot, "needs root to create users"))
    func jobsOfTwoUsersSurviveASIGKILLedDaemonWithTheirRealExitCodes() throws {
        try Self.ensureUsersAndGroup()
        let (alice, bob) = (PermissionTests.users[0], PermissionTests.users[1])
        let d = try DaemonFixture()
        let a = try d.submit(["--workdir", "/tmp", "--", "sh", "-c", "sleep 2; exit 5"], as: alice)
        let b = try d.submit(["--workdir", "/tmp", "--", "sh", "-c", "sleep 2; id -un"], as: bob)
        let quick = try d.submit(["--workdir", "/tmp", "--", "sh", "-c", "sleep 0.5; exit 7"], as: alice)
        for j in [a, b, quick] { try d.wait(j, for: "running") }
        #expect(d.stop(signal: SIGKILL) == 128 + SIGKILL)
        sleep(1)  // quick ends while allotd is down
        try d.start()
        try d.wait(quick, for: "failed")
        #expect(d.job(quick)?["exit_code"] as? Int == 7)
        try d.wait(a, for: "failed")
        #expect(d.job(a)?["exit_code"] as? Int == 5)
        try d.wait(b, for: "completed")
        #expect(d.ctl(["logs", String(b)], as: bob).stdout == "\(bob)\n")
    }
}
