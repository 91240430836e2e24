import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Node agents: real `allotd agent` processes on loopback, each with its own certificate from a CA made by
/// `allotctl ca`, linked to a real controller over mutual TLS.
@Suite(.serialized) struct AgentTests {
    /// A CA with a controller certificate for 127.0.0.1 and node certificates.
    static func makePKI(_ dir: String, nodes: [String]) throws {
        func ctl(_ args: [String]) throws {
            let r = try Harness.run("allotctl", ["ca"] + args + ["--dir", dir])
            guard r.status == 0 else { throw FixtureError("allotctl ca \(args): \(r.stderr)") }
        }
        try ctl(["init"])
        try ctl(["issue", "--controller", "controller", "--host", "127.0.0.1"])
        for n in nodes { try ctl(["issue", "--node", n]) }
    }

    /// A running controller with a fresh CA and certificates for `nodes`.
    static func controller(
        nodes: [String],
        n2: String = "",
        nodeTimeout: String = "1.5s"
    ) throws -> (DaemonFixture, Int, String) {
        let port = MetricsTests.freePort()
        let d = try DaemonFixture(start: false)
        let pki = d.dir.path + "/pki"
        try makePKI(pki, nodes: nodes)
        try d.writeConfig(pool: pool(port: port, pki: pki, n2: n2, nodeTimeout: nodeTimeout))
        try d.start()
        return (d, port, pki)
    }

    static func pool(
        port: Int,
        pki: String,
        onLoss: String = "requeue-preemptible",
        n2: String = "",
        nodeTimeout: String = "1.5s"
    ) -> String {
        """
        [scheduler]
        default_grace = "1s"
        interval = "1s"

        [[gpu_model]]
        name = "A100"
        memory_gib = 80
        price_per_hour = 2.0
        speed = 1.0

        [[gpu_model]]
        name = "H100"
        memory_gib = 80
        price_per_hour = 3.0
        speed = 2.0

        [[node]]
        name = "n1"
        gpu_model = "A100"
        gpus = 4

        [[node]]
        name = "n2"
        gpu_model = "H100"
        gpus = 4
        \(n2)

        [cluster]
        listen = "127.0.0.1:\(port)"
        ca = "\(pki)/ca.crt"
        certificate = "\(pki)/controller.crt"
        key = "\(pki)/controller.key"
        heartbeat_interval = "0.3s"
        node_timeout = "\(nodeTimeout)"
        on_node_loss = "\(onLoss)"

        """
    }

    /// A running `allotd agent`.
    final class AgentProcess {
        let process: ChildProcess
        let log: String
        let stateDir: String

        init(
            node: String,
            port: Int,
            pki: String,
            dir: String,
            cert: String? = nil,
            key: String? = nil,
            stateDir: String? = nil,
            extra: [String] = ["--gpus", "4"],
            environment: [String: String] = [:],
            controller: String? = nil,
            netns: String? = nil
        ) throws {
            log = "\(dir)/agent-\(node)-\(UUID().uuidString.prefix(4)).log"
            var args =
                [
                    "agent", "--controller", controller ?? "127.0.0.1:\(port)", "--node", node, "--pki", pki,
                    "--log-level",
                    "debug",
                ] + extra
            self.stateDir = stateDir ?? "\(dir)/agent-\(node)"
            args += ["--state-dir", self.stateDir]
            if let cert { args += ["--cert", cert] }
            if let key { args += ["--key", key] }
            let allotd = Harness.binDir.appendingPathComponent("allotd").path
            if let ns = netns {
                process = try ChildProcess(
                    "/usr/sbin/ip",
                    ["netns", "exec", ns, allotd] + args,
                    output: log,
                    environment: environment
                )
            } else {
                process = try ChildProcess(allotd, args, output: log, environment: environment)
            }
        }

        var output: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }

        func kill(_ sig: Int32 = SIGKILL) -> Int32 {
            process.signal(sig)
            return process.wait()
        }

        deinit {
            process.signal(SIGKILL)
            _ = process.wait()
            DaemonFixture.killJobs(stateDir: stateDir)
            DaemonFixture.removeJobCgroups(stateDir: stateDir)
        }
    }

    func node(_ d: DaemonFixture, _ name: String) -> [String: Any]? {
        let r = d.ctl(["nodes", "--json"])
        let nodes = try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: Any]]
        return nodes?.first { $0["name"] as? String == name }
    }

    func linked(_ d: DaemonFixture, _ name: String) -> Bool {
        (node(d, name)?["agent"] as? [String: Any])?["link"] as? String == "up"
    }

    func eventually(_ what: String, timeout: Double = 10, _ condition: () -> Bool) {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if condition() { return }
            usleep(50_000)
        }
        Issue.record("never happened: \(what)")
    }

    @Test func agentsRegisterAndALostNodeGoesDownWithItsJobsRequeuedOrFailed() throws {
        let (d, port, pki) = try Self.controller(nodes: ["n1", "n2"])
        let a1 = try AgentProcess(node: "n1", port: port, pki: pki, dir: d.dir.path)
        let a2 = try AgentProcess(node: "n2", port: port, pki: pki, dir: d.dir.path)
        eventually("both agents linked") { linked(d, "n1") && linked(d, "n2") }
        let agent = node(d, "n1")?["agent"] as? [String: Any]
        #expect(agent?["version"] as? String == "0.1.0")
        #expect(agent?["last_heartbeat"] as? String != nil)
        #expect(a1.output.contains("Registered with the controller"), "\(a1.output)")
        // Two jobs on n1 (the A100s): one preemptible, one not.
        let pre = try d.submit(["--gpus", "2", "--gpu-model", "A100", "--preemptible", "--", "sleep", "100"])
        let keep = try d.submit(["--gpus", "2", "--gpu-model", "A100", "--no-preemptible", "--", "sleep", "100"])
        try d.wait(pre, for: "running")
        try d.wait(keep, for: "running")
        // The agent dies: after node_timeout (1.5 s) the node is down; the preemptible job goes back to the
        // queue and the other fails, both saying why.
        _ = a1.kill()
        let lostAt = Date()
        eventually("n1 down") { node(d, "n1")?["state"] as? String == "down" }
        // Not at once (the dropped connection alone does not make a node down), but node_timeout after its
        // last heartbeat, which came up to one interval (0.3 s) before the kill: 1.2 s at the least, less
        // the time kill() took to see the agent gone (CI measured 1.187 s).
        let took = Date().timeIntervalSince(lostAt)
        #expect(took >= 1.0 && took < 4, "detected after \(took) s")
        #expect((node(d, "n1")?["reason"] as? String)?.hasPrefix("agent lost: no heartbeat") == true)
        #expect((node(d, "n1")?["agent"] as? [String: Any])?["link"] as? String == "down")
        #expect(d.state(pre) == "pending")
        #expect(d.state(keep) == "failed")
        #expect((d.job(keep)?["reason"] as? String)?.contains("node n1 was lost") == true, "\(d.job(keep) ?? [:])")
        #expect(node(d, "n2")?["state"] as? String == "up", "the other node is untouched")
        // It comes back: the node is up again and the requeued job runs there.
        let again = try AgentProcess(node: "n1", port: port, pki: pki, dir: d.dir.path)
        eventually("n1 up") { node(d, "n1")?["state"] as? String == "up" }
        try d.wait(pre, for: "running")
        #expect(again.output.contains("Registered"))
        _ = a2
    }

    /// Service replicas on an agent's node: the agent gives each its port and checks it (readiness gates the
    /// endpoints), reads its metrics for the autoscaler, and a replica that dies is replaced (issue 15).
    @Test func servicesOnAnAgentsNodeAreCheckedAndScaledByItsAgent() throws {
        let (d, port, pki) = try Self.controller(nodes: ["n1"])
        let agent = try AgentProcess(node: "n1", port: port, pki: pki, dir: d.dir.path)
        eventually("agent linked") { linked(d, "n1") }
        // The model server serves its working directory: /ready is there only once the file is.
        let www = d.dir.appendingPathComponent("www")
        try FileManager.default.createDirectory(at: www, withIntermediateDirectories: true)
        chmod(www.path, 0o755)
        try "vllm:num_requests_running 3\nvllm:num_requests_waiting 0\n".write(
            to: www.appendingPathComponent("metrics"),
            atomically: true,
            encoding: .utf8
        )
        let create = d.ctl(
            [
                "service", "create", "--gpus", "1", "--gpu-model", "A100", "--min", "1", "--max", "3", "--ready",
                "http:/ready", "--autoscale", "target=4,window=3s,panic-window=2s,metrics=/metrics", "--workdir",
                www.path, "web", "--",
            ] + ServiceTests.server
        )
        #expect(create.status == 0, "\(create.stderr)")
        // Running but not ready: the agent's readiness check says why, and there is no endpoint.
        eventually("the agent's readiness check fails") {
            let members =
                ServiceTests.object(d.ctl(["service", "show", "web", "--json"]))["members"] as? [[String: Any]]
            return (members?.first?["reason"] as? String)?.contains("answered 404") == true
        }
        #expect(ServiceTests.endpoints(d, "web").isEmpty)
        try "ok\n".write(to: www.appendingPathComponent("ready"), atomically: true, encoding: .utf8)
        let ready = ServiceTests.until(10) { ServiceTests.endpoints(d, "web").count == 1 }
        try #require(ready != nil, "\(d.ctl(["service", "show", "web"]).stdout)\n\(agent.output.suffix(2000))")
        let first = try #require(ServiceTests.endpoints(d, "web").first)
        let firstPort = try #require(first["port"] as? Int)
        #expect(ServiceTests.get(port: firstPort) == 200, "the port the agent gave it")
        // Its metrics, read by the agent, say 3 in flight against a target of 4: one replica. Then 12: three.
        try "vllm:num_requests_running 12\nvllm:num_requests_waiting 0\n".write(
            to: www.appendingPathComponent("metrics"),
            atomically: true,
            encoding: .utf8
        )
        let up = ServiceTests.until(20) { ServiceTests.endpoints(d, "web").count == 3 }
        #expect(up != nil, "\(d.ctl(["service", "show", "web"]).stdout)\n\(d.daemonLog.suffix(1500))")
        // Every replica's page says 12 now: the load the agents read adds up (a mean over the window).
        var load = 0.0
        let summed = ServiceTests.until(10) {
            load = ServiceTests.object(d.ctl(["service", "show", "web", "--json"]))["load"] as? Double ?? 0
            return load >= 24
        }
        #expect(summed != nil, "load \(load)")
        let ports = ServiceTests.endpoints(d, "web").compactMap { $0["port"] as? Int }
        #expect(Set(ports).count == 3, "each replica its own port: \(ports)")
        // A replica dies: it is replaced, ready again on the agent's node.
        _ = try? Harness.run(
            "/usr/bin/pkill",
            ["-f", "http.server --bind 127.0.0.1 \(firstPort)"],
            absolute: true
        )
        let replaced = ServiceTests.until(20) {
            let e = ServiceTests.endpoints(d, "web")
            return e.count == 3 && !e.contains { $0["port"] as? Int == firstPort }
        }
        #expect(replaced != nil, "\(d.ctl(["service", "show", "web"]).stdout)")
        print("agent replica killed: replacement ready after \(String(format: "%.2f", replaced ?? -1)) s")
        #expect(d.ctl(["service", "delete", "web"]).status == 0)
        // A replica failing its liveness check on the agent is restarted through the controller.
        let sick = d.ctl(
            [
                "service", "create", "--gpus", "1", "--gpu-model", "A100", "--live", "http:/missing", "--grace", "1s",
                "--workdir", www.path, "sick", "--",
            ] + ServiceTests.server
        )
        #expect(sick.status == 0, "\(sick.stderr)")
        let member = try #require(
            (ServiceTests.object(d.ctl(["service", "show", "sick", "--json"]))["members"] as? [[String: Any]])?
                .first?["id"] as? Int
        )
        let restarted = ServiceTests.until(20) { (d.job(member)?["earlier_runs"] as? [Any])?.isEmpty == false }
        #expect(restarted != nil, "\(d.job(member) ?? [:])\n\(d.daemonLog.suffix(1500))")
        #expect(d.daemonLog.contains("its liveness check failed 3 times in a row: GET /missing answered 404"))
    }

    @Test func certificatesFromAnotherCAOrForAnotherNodeAreRefused() throws {
        let (d, port, pki) = try Self.controller(nodes: ["n1", "n2"])
        // A node certificate from another CA: the TLS handshake fails, and the controller says so.
        let other = d.dir.path + "/other"
        try Self.makePKI(other, nodes: ["n1"])
        let stranger = try AgentProcess(
            node: "n1",
            port: port,
            pki: pki,
            dir: d.dir.path,
            cert: other + "/n1.crt",
            key: other + "/n1.key"
        )
        eventually("the controller refuses the stranger") {
            d.daemonLog.contains("Agent refused: TLS handshake failed")
        }
        #expect((node(d, "n1")?["agent"]) == nil, "no agent registered for n1")
        _ = stranger.kill()
        // n2's certificate claiming n1: the agent refuses to start, naming the mismatch.
        let wrong = try Harness.run(
            "allotd",
            [
                "agent", "--controller", "127.0.0.1:\(port)", "--node", "n1", "--pki", pki, "--cert", pki + "/n2.crt",
                "--key", pki + "/n2.key", "--gpus", "4",
            ]
        )
        #expect(wrong.status == 1)
        #expect(wrong.stderr.contains("is for node n2, not n1"), "\(wrong.stderr)")
        // And the controller checks it too (a client that does not check itself).
        let script = """
            import json, socket, ssl, sys
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_verify_locations("\(pki)/ca.crt")
            ctx.check_hostname = False
            ctx.load_cert_chain("\(pki)/n2.crt", "\(pki)/n2.key")
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", \(port))))
            s.sendall((json.dumps({"jsonrpc": "2.0", "id": 1, "method": "agent.register", "params": {"node": "n1",
                "protocol_version": 1, "agent_version": "x", "hostname": "h", "gpus": []}}) + "\\n").encode())
            print(s.recv(4096).decode().strip())
            """
        let r = try Harness.run("/usr/bin/env", ["python3", "-c", script], absolute: true)
        #expect(r.stdout.contains("its certificate is for node n2, but it claims node n1"), "\(r.stdout) \(r.stderr)")
        #expect(d.daemonLog.contains("Agent refused"))
        #expect(node(d, "n1")?["agent"] == nil)
        // A node the configuration does not have is refused with the reason.
        let r2 = try Harness.run("allotctl", ["ca", "issue", "--dir", pki, "--node", "n9"])
        #expect(r2.status == 0)
        let n9 = try AgentProcess(node: "n9", port: port, pki: pki, dir: d.dir.path)
        // (A loaded machine may take a while to start the agent and its TLS handshake: 30 s.)
        eventually("n9 refused", timeout: 30) { n9.output.contains("no node n9 in the configuration") }
    }

    /// A malformed message on the agent link gets an error answer and a log line; it was dropped in silence.
    @Test func malformedAgentMessagesGetAnErrorAnswerAndALogLineNeverSilence() throws {
        let (d, port, pki) = try Self.controller(nodes: ["n1", "n2"])
        let script = """
            import json, socket, ssl, sys, time
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_verify_locations("\(pki)/ca.crt")
            ctx.check_hostname = False
            ctx.load_cert_chain("\(pki)/n1.crt", "\(pki)/n1.key")
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", \(port))))
            f = s.makefile("rb")
            def send(obj): s.sendall(((obj if isinstance(obj, str) else json.dumps(obj)) + "\\n").encode())
            send({"jsonrpc": "2.0", "id": 1, "method": "agent.register", "params": {"node": "n1",
                "protocol_version": 1, "agent_version": "x", "hostname": "h", "gpus": []}})
            print("register:", f.readline().decode().strip()[:60])
            send("this is not json")
            send({"jsonrpc": "2.0", "method": "agent.report", "params": {"runs": "oops"}})
            send({"jsonrpc": "2.0", "method": "agent.nonsense", "params": {}})
            errors = []
            deadline = time.time() + 10
            while len(errors) < 3 and time.time() < deadline:
                m = json.loads(f.readline())
                if "error" in m: errors.append(m["error"]["message"])
            for e in errors: print("error:", e)
            """
        let r = try Harness.run("/usr/bin/env", ["python3", "-c", script], absolute: true)
        let errors = r.stdout.split(separator: "\n").filter { $0.hasPrefix("error: ") }
        #expect(errors.count == 3, "\(r.stdout) \(r.stderr)")
        #expect(r.stdout.contains("the message is not JSON"), "\(r.stdout)")
        #expect(r.stdout.contains("agent.report: \"params."), "\(r.stdout)")
        #expect(r.stdout.contains("no method \"agent.nonsense\""), "\(r.stdout)")
        eventually("the controller logs them") {
            d.daemonLog.components(separatedBy: "Malformed message from an agent").count - 1 >= 3
        }
    }

    @Test func jobsRunOnAgentsAreFencedAfterAPartitionAndSurviveAControllerRestart() throws {
        let (d, port, pki) = try Self.controller(nodes: ["n1", "n2"])
        let a1 = try AgentProcess(node: "n1", port: port, pki: pki, dir: d.dir.path)
        let a2 = try AgentProcess(node: "n2", port: port, pki: pki, dir: d.dir.path)
        eventually("both agents linked") { linked(d, "n1") && linked(d, "n2") }
        // A job placed on n1 runs there, with its GPUs, and its exit status comes back.
        let quick = try d.submit([
            "--gpus", "2", "--gpu-model", "A100", "--", "sh", "-c", "echo $CUDA_VISIBLE_DEVICES; exit 3",
        ])
        try d.wait(quick, for: "failed")
        #expect(d.job(quick)?["exit_code"] as? Int == 3)
        let log = (try? String(contentsOfFile: "\(d.dir.path)/agent-n1/logs/\(quick).log", encoding: .utf8)) ?? ""
        #expect(log == "0,1\n", "\(log)")
        // allotctl logs reads it from the agent, through the controller; -f follows a running job there.
        #expect(d.ctl(["logs", String(quick)]).stdout == "0,1\n")
        let talk = try d.submit([
            "--gpus", "1", "--gpu-model", "A100", "--", "sh", "-c", "for i in 1 2 3; do echo line $i; sleep 0.3; done",
        ])
        let followed = d.ctl(["logs", "-f", String(talk)])
        #expect(followed.status == 0, "\(followed.stderr)")
        #expect(followed.stdout == "line 1\nline 2\nline 3\n", "\(followed.stdout)")
        // Cancel reaches the job on its agent: its SIGTERM trap runs.
        let trap = try d.submit([
            "--gpus", "1", "--gpu-model", "H100", "--grace", "5s", "--", "sh", "-c",
            "trap 'echo bye; exit 0' TERM; sleep 300 & wait",
        ])
        try d.wait(trap, for: "running")
        usleep(500_000)
        #expect(d.ctl(["cancel", String(trap)]).status == 0)
        try d.wait(trap, for: "cancelled")
        #expect(d.job(trap)?["exit_code"] as? Int == 0)
        // A partition: n1's agent stops answering (SIGSTOP) past node_timeout. Its preemptible job is
        // requeued; when the agent comes back it kills the stale run before anything else.
        let pre = try d.submit([
            "--gpus", "4", "--gpu-model", "A100", "--preemptible", "--", "sh", "-c", "echo $$; sleep 300",
        ])
        try d.wait(pre, for: "running")
        var stalePID: Int32?
        eventually("the job's pid in its log") {
            let text = (try? String(contentsOfFile: "\(d.dir.path)/agent-n1/logs/\(pre).log", encoding: .utf8)) ?? ""
            stalePID = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines))
            return stalePID != nil
        }
        a1.process.signal(SIGSTOP)
        eventually("n1 down") { node(d, "n1")?["state"] as? String == "down" }
        #expect(d.state(pre) == "pending")
        #expect(kill(stalePID ?? 0, 0) == 0, "the stale run still runs on the cut-off node")
        a1.process.signal(SIGCONT)
        eventually("n1 up") { node(d, "n1")?["state"] as? String == "up" }
        eventually("the stale run is killed by its agent") { kill(stalePID ?? 0, 0) != 0 }
        #expect(a1.output.contains("Killed runs the controller no longer assigns to this node"), "\(a1.output)")
        // The requeued job runs again (run 2), once.
        try d.wait(pre, for: "running")
        // The controller is killed while a job runs on n2; it comes back, the agent reconnects, and the
        // job's end is recorded exactly once.
        let long = try d.submit(["--gpus", "2", "--gpu-model", "H100", "--", "sh", "-c", "sleep 3; exit 7"])
        try d.wait(long, for: "running")
        #expect(d.stop(signal: SIGKILL) == 128 + SIGKILL)
        try d.start()
        try d.wait(long, for: "failed", timeout: 20)
        #expect(d.job(long)?["exit_code"] as? Int == 7)
        let starts = a2.output.split(separator: "\n").filter {
            $0.contains("Start order") && $0.contains("job.id=\(long) ")
        }
        #expect(starts.count == 1, "one start order for job \(long) on n2: \(starts)")
        let ends = d.daemonLog.split(separator: "\n").filter {
            $0.contains("Job ended") && $0.contains("job.id=\(long) ")
        }
        #expect(ends.count == 1, "the end was recorded \(ends.count) times: \(ends)")
    }

    /// An elastic job on an agent's node grows when GPUs free there, told where by the notice the agent
    /// writes to its `ALLOT_RESIZE_FILE` before the signal, as allotd does for its own nodes.
    @Test func anElasticJobOnAnAgentsNodeFindsItsResizeNotice() throws {
        // No minimum run time: the job may grow as soon as GPUs free.
        let (d, port, pki) = try Self.controller(nodes: ["n1", "n2"], n2: "\n[preemption]\nmin_runtime = \"0s\"\n")
        let a1 = try AgentProcess(node: "n1", port: port, pki: pki, dir: d.dir.path)
        eventually("the agent linked") { linked(d, "n1") }
        let blocker = try d.submit(["--gpus", "2", "--gpu-model", "A100", "--", "sleep", "300"])
        try d.wait(blocker, for: "running")
        let record = d.dir.appendingPathComponent("elastic-agent.txt").path
        let job = try d.submit(ElasticEndToEndTests.recordingJob(record))
        func seen(_ text: String) -> Bool { ElasticEndToEndTests.eventuallyContains(record, text) }
        #expect(seen("start 1 2 n1:"), "\(a1.output.suffix(2000))")
        _ = d.ctl(["cancel", String(blocker)])
        #expect(seen("start 2 4 n1:0-3"), "\((try? String(contentsOfFile: record, encoding: .utf8)) ?? "")")
        #expect(
            seen("notice 1 ALLOT_GPUS=4 ALLOT_NODES=n1:0-3 ALLOT_GPU_MODEL=A100"),
            "\((try? String(contentsOfFile: record, encoding: .utf8)) ?? "")\n\(a1.output.suffix(2000))"
        )
        _ = d.ctl(["cancel", String(job)])
    }

    @Test func anAgentReportsItsGPUsAndTheirFailures() throws {
        let (d, port, pki) = try Self.controller(nodes: ["n1"])
        let nvml = d.dir.path + "/nvml.txt"
        try GPUDiscoveryTests.fourH100.write(toFile: nvml, atomically: true, encoding: .utf8)
        let agent = try AgentProcess(
            node: "n1",
            port: port,
            pki: pki,
            dir: d.dir.path,
            extra: [
                "--discover", "nvml", "--nvml-library", GPUDiscoveryTests.fakeNVML, "--gpu-check-interval", "0.3s",
            ],
            environment: ["FAKE_NVML_FILE": nvml]
        )
        eventually("n1 linked") { (node(d, "n1")?["agent"] as? [String: Any])?["link"] as? String == "up" }
        let gpus = node(d, "n1")?["gpu_list"] as? [[String: Any]]
        #expect(gpus?.count == 4)
        #expect(gpus?.first?["uuid"] as? String == "GPU-00000000-1111-2222-3333-444444444440", "\(gpus ?? [])")
        let j = try d.submit(["--gpus", "2", "--gpu-model", "A100", "--grace", "1s", "--", "sleep", "300"])
        try d.wait(j, for: "running")
        // GPU 0 falls off the bus on the agent's node: out of scheduling, and the job moves off it.
        try GPUDiscoveryTests.append("xid 0 79", to: nvml)
        eventually("GPU 0 unhealthy") {
            ((node(d, "n1")?["gpus_unhealthy"] as? [Int]) ?? []).contains(0)
        }
        eventually("the job runs again away from GPU 0") {
            let slices = d.job(j)?["gpu_indices"] as? [[String: Any]]
            let held = slices?.first?["gpus"] as? [Int] ?? [0]
            return d.state(j) == "running" && !held.contains(0)
        }
        #expect(d.daemonLog.contains("GPU 0 of node n1 failed: XID 79"), "\(d.daemonLog.suffix(1500))")
        _ = agent
    }

    /// MIG on an agent's node (issue 14): the agent makes each MIG job's instance through its NVML (the
    /// stand-in), the job sees only its `MIG-` device, an instance outlives a restart of the agent with its
    /// job, the instance of a job that ended while the agent was down goes when it is back, and the last
    /// goes when its job ends.
    @Test func anAgentMakesItsNodesMIGInstancesAndTheyOutliveItsRestart() throws {
        let (d, port, pki) = try Self.controller(nodes: ["n2"], n2: "mig = \"dynamic\"", nodeTimeout: "20s")
        let nvml = d.dir.path + "/nvml.txt"
        try (GPUDiscoveryTests.fourH100 + "mig 0\nmig 1\nmig 2\nmig 3\n").write(
            toFile: nvml,
            atomically: true,
            encoding: .utf8
        )
        let layout = nvml + ".mig"
        func instances() -> [String] { GPUDiscoveryTests.migInstances(layout) }
        let state = d.dir.path + "/agent-n2-state"
        func agent() throws -> AgentProcess {
            try AgentProcess(
                node: "n2",
                port: port,
                pki: pki,
                dir: d.dir.path,
                stateDir: state,
                extra: ["--discover", "nvml", "--nvml-library", GPUDiscoveryTests.fakeNVML],
                environment: ["FAKE_NVML_FILE": nvml]
            )
        }
        let first = try agent()
        eventually("n2 linked") { linked(d, "n2") }
        let serve = ["--kind", "inference", "--grace", "1s", "--mig", "3g.40gb", "--", "sh", "-c"]
        let a = try d.submit(serve + ["echo $CUDA_VISIBLE_DEVICES; exec sleep 300"])
        try d.wait(a, for: "running")
        let b = try d.submit(serve + ["echo $CUDA_VISIBLE_DEVICES; sleep 297; exit 0"])
        try d.wait(b, for: "running")
        let slots = [a, b].compactMap { d.job($0)?["mig_instance"] as? String }.sorted()
        #expect(slots == ["3g.40gb@0", "3g.40gb@4"], "\(slots)")
        eventually("both instances made") { instances().count == 2 }
        #expect(instances().allSatisfy { $0.hasPrefix("gi 0 ") }, "\(instances())")
        eventually("the job printed its device") { d.ctl(["logs", String(a)]).stdout.contains("MIG-") }
        let device = d.ctl(["logs", String(a)]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(device.hasPrefix("MIG-00000000-1111-2222-3333-444444444440-gi"), "\(device)")
        #expect(!device.contains(","), "the job sees its MIG device only: \(device)")
        // The agent dies; meanwhile job b ends. Back, the agent takes job a back with its instance, and
        // removes b's.
        _ = first.kill()
        _ = try Harness.run("/usr/bin/pkill", ["-f", "^sleep 297"], absolute: true)
        usleep(500_000)
        #expect(instances().count == 2, "nobody removes an instance while the agent is down")
        // (the first agent's object lives on: its end would kill the jobs in the state directory)
        let a2 = try agent()
        try d.wait(b, for: "completed")
        eventually("b's instance removed") { instances().count == 1 }
        #expect(d.state(a) == "running", "\(d.job(a) ?? [:]) \(a2.output)")
        #expect(a2.output.contains("MIG instance removed"), "\(a2.output)")
        // a's instance is the one that stayed, and goes when a ends.
        // `gi GPU ID PROFILE START SIZE CI`
        let start = (d.job(a)?["mig_instance"] as? String)?.split(separator: "@").last.map(String.init)
        #expect(instances().first?.split(separator: " ").dropFirst(4).first.map(String.init) == start, "\(instances())")
        #expect(d.ctl(["cancel", String(a)]).status == 0)
        try d.wait(a, for: "cancelled")
        eventually("every instance removed") { instances().isEmpty }
        withExtendedLifetime((first, a2)) {}
    }

    static var canMakeNetworkNamespaces: Bool {
        getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip")
    }

    /// A network namespace joined to the host by a veth pair: the host side is 10.231.N.1, the namespace's
    /// 10.231.N.2. `cut`/`mend` take the host side down and up: a real partition.
    final class NetworkNamespace {
        let name: String
        let hostVeth: String
        let hostIP: String

        init() throws {
            let n = Int.random(in: 1...250)
            let tag = String(UUID().uuidString.prefix(6)).lowercased()
            name = "allot-e2e-\(tag)"
            hostVeth = "ah\(tag)"
            hostIP = "10.231.\(n).1"
            let steps: [[String]] = [
                ["netns", "add", name],
                ["link", "add", hostVeth, "type", "veth", "peer", "name", "an\(tag)"],
                ["link", "set", "an\(tag)", "netns", name],
                ["addr", "add", "\(hostIP)/24", "dev", hostVeth],
                ["link", "set", hostVeth, "up"],
                ["-n", name, "addr", "add", "10.231.\(n).2/24", "dev", "an\(tag)"],
                ["-n", name, "link", "set", "an\(tag)", "up"],
                ["-n", name, "link", "set", "lo", "up"],
            ]
            for step in steps {
                let r = try Harness.run("/usr/sbin/ip", step, absolute: true)
                guard r.status == 0 else { throw FixtureError("ip \(step): \(r.stderr)") }
            }
        }

        func cut() { _ = try? Harness.run("/usr/sbin/ip", ["link", "set", hostVeth, "down"], absolute: true) }
        func mend() { _ = try? Harness.run("/usr/sbin/ip", ["link", "set", hostVeth, "up"], absolute: true) }

        deinit {
            _ = try? Harness.run("/usr/sbin/ip", ["link", "del", hostVeth], absolute: true)
            _ = try? Harness.run("/usr/sbin/ip", ["netns", "del", name], absolute: true)
        }
    }

    @Test(.enabled(if: AgentTests.canMakeNetworkNamespaces, "needs root and iproute2 for network namespaces"))
    func anAgentCutOffByARealPartitionIsFencedWhenTheLinkReturns() throws {
        let ns = try NetworkNamespace()
        let port = MetricsTests.freePort()
        let d = try DaemonFixture(start: false)
        let pki = d.dir.path + "/pki"
        try Self.makePKI(pki, nodes: ["n1"])
        // The controller's certificate names the address the agent dials.
        let r = try Harness.run(
            "allotctl",
            ["ca", "issue", "--dir", pki, "--controller", "controller", "--host", ns.hostIP]
        )
        #expect(r.status == 0, "\(r.stderr)")
        try d.writeConfig(
            pool: Self.pool(port: port, pki: pki).replacingOccurrences(of: "127.0.0.1:\(port)", with: "0.0.0.0:\(port)")
        )
        try d.start()
        let agent = try AgentProcess(
            node: "n1",
            port: port,
            pki: pki,
            dir: d.dir.path,
            controller: "\(ns.hostIP):\(port)",
            netns: ns.name
        )
        eventually("n1 linked from its namespace") {
            (node(d, "n1")?["agent"] as? [String: Any])?["link"] as? String == "up"
        }
        let j = try d.submit([
            "--gpus", "4", "--gpu-model", "A100", "--preemptible", "--", "sh", "-c", "echo $$; sleep 300",
        ])
        try d.wait(j, for: "running")
        var pid: Int32?
        eventually("the job's pid") {
            let text = (try? String(contentsOfFile: "\(d.dir.path)/agent-n1/logs/\(j).log", encoding: .utf8)) ?? ""
            pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines))
            return pid != nil
        }
        // The link is cut: the node goes down, the job is requeued; on the far side the run goes on.
        ns.cut()
        eventually("n1 down") { node(d, "n1")?["state"] as? String == "down" }
        #expect(d.state(j) == "pending")
        #expect(kill(pid ?? 0, 0) == 0)
        // The link is mended: the agent reconnects, kills the stale run, and the job runs again there.
        ns.mend()
        eventually("n1 up", timeout: 20) { node(d, "n1")?["state"] as? String == "up" }
        eventually("the stale run is gone") { kill(pid ?? 0, 0) != 0 }
        try d.wait(j, for: "running")
        #expect(agent.output.contains("Killed runs the controller no longer assigns to this node"), "\(agent.output)")
    }

    @Test func aNodeWhoseAgentDiedWhileTheControllerWasDownIsLostAfterItRestarts() throws {
        let (d, port, pki) = try Self.controller(nodes: ["n1", "n2"])
        let a1 = try AgentProcess(node: "n1", port: port, pki: pki, dir: d.dir.path)
        eventually("n1 linked") { linked(d, "n1") }
        let keep = try d.submit(["--gpus", "2", "--gpu-model", "A100", "--no-preemptible", "--", "sleep", "300"])
        try d.wait(keep, for: "running")
        // Both go down; only the controller comes back.
        #expect(d.stop(signal: SIGKILL) == 128 + SIGKILL)
        _ = a1.kill()
        let restarted = Date()
        try d.start()
        #expect(d.state(keep) == "running", "the log says it runs; the agent has node_timeout to say so too")
        eventually("n1 lost") { node(d, "n1")?["state"] as? String == "down" }
        #expect(Date().timeIntervalSince(restarted) >= 1.4)
        #expect(d.state(keep) == "failed")
        #expect((d.job(keep)?["reason"] as? String)?.contains("agent lost") == true, "\(d.job(keep) ?? [:])")
        #expect(node(d, "n2")?["state"] as? String == "up", "an idle node without an agent is left alone")
    }

    /// `allotctl run` on an agent's node: the terminal is relayed through allotd's socket and the agent's
    /// link (`attach`, `agent.tty_*`), and behaves as a local one: pipes, exit codes, a terminal of the
    /// client's size with keys and Ctrl-C, a large input that slows the client rather than cutting the link.
    @Test func interactiveRunsOnAnAgentsNodeAreRelayedThroughAllotd() throws {
        let (d, port, pki) = try Self.controller(nodes: ["n1", "n2"])
        let a2 = try AgentProcess(node: "n2", port: port, pki: pki, dir: d.dir.path)
        eventually("n2 linked") { linked(d, "n2") }
        // Pipes: input, output and errors apart, the exit code.
        let r = d.ctl(
            [
                "run", "--gpus", "2", "--gpu-model", "H100", "--", "sh", "-c",
                "read x; echo \"got $x gpus=$CUDA_VISIBLE_DEVICES\"; echo oops >&2; cat; exit 3",
            ],
            stdin: "hello\nrest of input\n"
        )
        #expect(r.status == 3, "\(r.stderr) \(a2.output.suffix(2000))")
        #expect(r.stdout == "got hello gpus=0,1\nrest of input\n", "\(r.stdout)")
        #expect(r.stderr.contains("oops"), "\(r.stderr)")
        let ended = d.ctl(["ls", "--state", "all", "--json"]).stdout
        #expect(ended.contains("\"n2\""), "it ran on the agent's node: \(ended)")
        // 3 MB of input through the relay: all of it arrives, and the agent's link stays up.
        let big = String(
            repeating: "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_+=!\n",
            count: 45_455
        )
        let counted = d.ctl(["run", "--gpu-model", "H100", "--", "wc", "-c"], stdin: big)
        #expect(
            counted.status == 0
                && counted.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "\(big.utf8.count)",
            "\(counted) \(a2.output.suffix(3000)) \(d.daemonLog.suffix(3000))"
        )
        #expect(linked(d, "n2"))
        // A terminal: its size, typed keys, Ctrl-C ends the run with 130.
        let t = try InteractiveTests.Terminal(
            ["run", "--gpu-model", "H100", "--", "sh", "-c", "stty size; read x; echo \"got:$x\"; sleep 300"],
            socket: d.socket
        )
        #expect(t.read(until: "40 100"), "\(t.text) \(a2.output.suffix(2000))")
        t.type("typed words\r")
        #expect(t.read(until: "got:typed words"), "\(t.text)")
        t.type("\u{3}")
        var status = t.exitStatus(timeout: 10)
        if status == nil {
            t.type("\u{3}")
            status = t.exitStatus(timeout: 30)
        }
        #expect(status == 130, "\(t.text)")
        // `attach` is for interactive runs only, and says so.
        let batch = try d.submit(["--gpu-model", "H100", "--", "sleep", "300"])
        try d.wait(batch, for: "running")
        let c = try RawClient(path: d.socket)
        c.write(#"{"jsonrpc":"2.0","id":1,"method":"attach","params":{"id":\#(batch)}}"# + "\n")
        let refusal = c.readLine() ?? ""
        #expect(refusal.contains("not an interactive run"), "\(refusal)")
    }
}
