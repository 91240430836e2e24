import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `allotctl top` in a real terminal: tmux runs it (a server of the test's own), the test presses keys
/// (`send-keys`) and reads the screen (`capture-pane`), resizes the window and restarts allotd under it.
@Suite(.serialized) struct TopTests {
    static let hasTmux = FileManager.default.isExecutableFile(atPath: "/usr/bin/tmux")

    /// A tmux server and session of the test's own.
    final class Tmux {
        let socket = "allot-top-\(UUID().uuidString.prefix(8))"
        let session = "top"

        init(_ command: String, width: Int, height: Int) throws {
            let r = tmux(["new-session", "-d", "-s", session, "-x", String(width), "-y", String(height), command])
            guard r.status == 0 else { throw FixtureError("tmux new-session: \(r.stdout)") }
        }

        deinit { _ = tmux(["kill-server"]) }

        /// Runs a tmux command (its output and errors together in `stdout`). Spawned with no signal blocked,
        /// as from a shell (the test's threads block some, and a tmux server that inherits that never
        /// answers), its output to a file (the server it may start would hold a pipe open).
        @discardableResult
        func tmux(_ args: [String]) -> Harness.Output {
            let file = "/tmp/\(socket)-\(UUID().uuidString.prefix(6)).out"
            defer { unlink(file) }
            guard let p = try? ChildProcess("/usr/bin/tmux", ["-L", socket] + args, output: file) else {
                return Harness.Output(status: -1, stdout: "tmux did not start", stderr: "")
            }
            let status = p.wait()
            return Harness.Output(
                status: status,
                stdout: (try? String(contentsOfFile: file, encoding: .utf8)) ?? "",
                stderr: ""
            )
        }

        var screen: String { tmux(["capture-pane", "-p", "-t", session]).stdout }
        var alive: Bool { tmux(["has-session", "-t", session]).status == 0 }
        func keys(_ k: String...) { tmux(["send-keys", "-t", session] + k) }

        /// Waits until the screen shows `text`; the screen then.
        @discardableResult
        func waitFor(_ text: String, timeout: Double = 15) -> Bool {
            let deadline = Date().addingTimeInterval(timeout)
            while Date() < deadline {
                if screen.contains(text) { return true }
                usleep(100_000)
            }
            return false
        }
    }

    @Test(.enabled(if: TopTests.hasTmux, "needs tmux (scripts/ensure-deps.sh installs it)"))
    func topDrawsThePoolFollowsKeysResizesAndReconnects() throws {
        let d = try DaemonFixture()
        // Two training jobs fill the A100s, an inference job takes an L4, two wait behind them.
        let big = try d.submit(["--name", "trainbig", "--gpus", "3", "--gpu-model", "A100", "--", "sleep", "300"])
        let small = try d.submit(["--name", "trainsmall", "--gpus", "1", "--gpu-model", "A100", "--", "sleep", "300"])
        let serve = try d.submit(
            ["--name", "serve", "--kind", "inference", "--gpus", "1", "--gpu-model", "L4", "--", "sleep", "300"]
        )
        for id in [big, small, serve] { try d.wait(id, for: "running") }
        let waiting = try d.submit(["--name", "waiter", "--gpus", "4", "--gpu-model", "A100", "--", "sleep", "1"])
        let other = try d.submit(
            ["--name", "infwait", "--kind", "inference", "--gpus", "2", "--gpu-model", "L4", "--", "sleep", "1"]
        )
        let ctl = Harness.binDir.appendingPathComponent("allotctl").path
        let t = try Tmux("ALLOT_SOCKET=\(d.socket) \(ctl) top --interval 0.2", width: 120, height: 40)
        #expect(t.waitFor("QUEUE"), "\(t.screen)")
        var s = t.screen
        // The nodes as GPU cells: a1 all training, l1 one inference and one held for the first waiting job.
        #expect(s.contains("a1 [TTTT]"), "\(s)")
        #expect(s.contains("l1 [Ir]"), "\(s)")
        #expect(s.contains("6: 4 training, 1 inference"), "\(s)")
        #expect(s.contains("waiter") && s.contains("infwait") && s.contains("trainbig"), "\(s)")
        #expect(s.contains("resources"), "a waiting job shows its blocker: \(s)")
        #expect(s.split(separator: "\n").allSatisfy { $0.count <= 120 })
        // Keys: only inference jobs.
        t.keys("k")
        #expect(t.waitFor("kind: training"))
        t.keys("k")
        #expect(t.waitFor("kind: inference"))
        #expect(t.waitFor("infwait"))
        s = t.screen
        #expect(!s.contains("waiter") && !s.contains("trainbig"), "\(s)")
        // why of the selected job (the first waiting inference job).
        t.keys("w")
        #expect(t.waitFor("WHY  job \(other)"), "\(t.screen)")
        t.keys("x")
        #expect(t.waitFor("QUEUE"))
        t.keys("k")
        #expect(t.waitFor("kind: all"))
        // A new job appears without a key: the view follows allotd's events.
        _ = try d.submit(["--name", "latecomer", "--gpus", "1", "--gpu-model", "A100", "--", "sleep", "1"])
        #expect(t.waitFor("latecomer"), "\(t.screen)")
        // A smaller window: every line fits it, the header stays.
        t.tmux(["resize-window", "-t", t.session, "-x", "70", "-y", "20"])
        #expect(t.waitFor("allot top"))
        usleep(500_000)
        s = t.screen
        #expect(s.contains("allot top") && s.contains("QUEUE"), "\(s)")
        #expect(s.split(separator: "\n").allSatisfy { $0.count <= 70 }, "\(s)")
        // allotd restarts: the view says so, then shows the pool again.
        #expect(d.stop() == 0)
        #expect(t.waitFor("reconnecting"), "\(t.screen)")
        try d.start()
        let back = Date().addingTimeInterval(15)
        while Date() < back && (t.screen.contains("reconnecting") || !t.screen.contains("a1 [")) { usleep(100_000) }
        #expect(!t.screen.contains("reconnecting") && t.screen.contains("a1 ["), "\(t.screen)")
        #expect(t.screen.contains("waiter"))
        // q quits, and the terminal is given back.
        t.keys("q")
        let gone = Date().addingTimeInterval(10)
        while t.alive && Date() < gone { usleep(100_000) }
        #expect(!t.alive, "top ended on q")
        _ = waiting
    }

    /// Not on a terminal: one snapshot as text, or as JSON; bad options are refused naming them.
    @Test func topPrintsOneSnapshotWhenNotOnATerminal() throws {
        let d = try DaemonFixture()
        let run = try d.submit(["--name", "runner", "--gpus", "4", "--gpu-model", "A100", "--", "sleep", "300"])
        try d.wait(run, for: "running")
        let w = try d.submit(["--name", "blocked", "--gpus", "2", "--gpu-model", "A100", "--", "true"])
        let text = d.ctl(["top"])
        #expect(text.status == 0, "\(text.stderr)")
        #expect(text.stdout.contains("a1") && text.stdout.contains("[TTTT]"), "\(text.stdout)")
        #expect(text.stdout.contains("blocked") && text.stdout.contains("runner"), "\(text.stdout)")
        let json = d.ctl(["top", "--json", "--kind", "training"])
        let o = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        #expect(o["pending"] as? Int == 1 && o["running_count"] as? Int == 1, "\(json.stdout)")
        let queue = try #require(o["queue"] as? [[String: Any]])
        #expect(queue.first?["id"] as? Int == w && queue.first?["reason"] as? String != nil, "\(queue)")
        let nodes = try #require(o["nodes"] as? [[String: Any]])
        #expect(nodes.map { $0["cells"] as? String ?? "" } == ["TTTT", ".."], "\(nodes)")
        // Time left counts from the current run's start (the walltime limits each run), not from all runs.
        let again = try d.submit(["--name", "again", "--gpu-model", "L4", "--walltime", "1h", "--", "sleep", "300"])
        try d.wait(again, for: "running")
        sleep(2)
        #expect(d.ctl(["requeue", String(again)]).status == 0)
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline
            && !(d.state(again) == "running" && (d.job(again)?["earlier_runs"] as? [Any])?.isEmpty == false)
        {
            usleep(100_000)
        }
        #expect((d.job(again)?["earlier_runs"] as? [Any])?.count == 1, "\(d.job(again) ?? [:])")
        let later = d.ctl(["top", "--json", "--sort", "time"])
        let l = try #require(try JSONSerialization.jsonObject(with: Data(later.stdout.utf8)) as? [String: Any])
        let row = try #require((l["running"] as? [[String: Any]])?.first { $0["id"] as? Int == again })
        let (left, ran) = (row["left_s"] as? Double ?? 0, row["ran_s"] as? Double ?? 0)
        #expect(left > 3500 && left + ran >= 3600 + 1.5, "left \(left), ran \(ran) over two runs")
        let bad = d.ctl(["top", "--sort", "fastest"])
        #expect(bad.status == 2 && bad.stderr.contains("--sort"), "\(bad.stderr)")
    }
}
