import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The metrics endpoint (`metrics_listen`), scraped and parsed by prometheus_client's parser.
@Suite(.serialized) struct MetricsTests {
    static var havePrometheusClient: Bool {
        (try? Harness.run("/usr/bin/env", ["python3", "-c", "import prometheus_client"], absolute: true).status) == 0
    }

    /// A free TCP port on 127.0.0.1.
    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    struct Scrape {
        var families: [String: String]
        var samples: [(name: String, labels: [String: String], value: Double)]
        var contentType: String

        func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
            samples.first { s in s.name == name && labels.allSatisfy { k, v in s.labels[k] == v } }?.value
        }
    }

    static func scrape(_ url: String) throws -> Scrape {
        let script = Harness.root.appendingPathComponent("Tests/EndToEndTests/testdata/scrape-metrics.py").path
        let r = try Harness.run("/usr/bin/env", ["python3", script, url], absolute: true)
        guard r.status == 0 else { throw FixtureError("scrape failed (\(r.status)): \(r.stderr)") }
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        let samples = (json["samples"] as! [[Any]]).map {
            (name: $0[0] as! String, labels: $0[1] as! [String: String], value: ($0[2] as! NSNumber).doubleValue)
        }
        return Scrape(
            families: json["families"] as! [String: String],
            samples: samples,
            contentType: json["content_type"] as? String ?? ""
        )
    }

    @Test(.enabled(if: MetricsTests.havePrometheusClient, "prometheus_client is not installed (.ci/run installs it)"))
    func theEndpointServesParsablePrometheusTextAboutThePool() throws {
        let port = Self.freePort()
        let d = try DaemonFixture(daemon: #"metrics_listen = "127.0.0.1:\#(port)""#)
        let url = "http://127.0.0.1:\(port)/metrics"
        // A training job on all four A100s, then inference that takes two back (a preemption).
        let train = try d.submit(["--gpus", "4", "--gpu-model", "A100", "--tenant", "research", "--", "sleep", "30"])
        try d.wait(train, for: "running")
        let serve = try d.submit([
            "--kind", "inference", "--gpus", "2", "--gpu-model", "A100", "--tenant", "product", "--", "sleep", "30",
        ])
        try d.wait(serve, for: "running", timeout: 20)
        let done = try d.submit(["--gpus", "1", "--gpu-model", "L4", "--", "true"])
        try d.wait(done, for: "completed")
        let m = try Self.scrape(url)
        #expect(m.contentType.hasPrefix("text/plain"))
        #expect(m.families["allot_gpus"] == "gauge")
        #expect(m.value("allot_gpus", ["model": "A100", "state": "total"]) == 4)
        #expect(m.value("allot_gpus", ["model": "A100", "state": "used"]) == 2)
        #expect(m.value("allot_gpus", ["model": "L4", "state": "free"]) == 2)
        #expect(m.value("allot_jobs", ["state": "running", "kind": "inference"]) == 1)
        #expect(m.value("allot_jobs", ["state": "pending", "kind": "training"]) == 1, "the preempted job waits")
        #expect(m.value("allot_jobs", ["state": "completed"]) == 1)
        #expect((m.value("allot_preemptions_total", ["reason": "priority"]) ?? 0) >= 1)
        #expect(m.value("allot_jobs_submitted_total") == 3)
        #expect(m.families["allot_queue_wait_seconds"] == "histogram")
        #expect((m.value("allot_queue_wait_seconds_count") ?? 0) >= 3)
        #expect((m.value("allot_schedule_pass_seconds_count") ?? 0) >= 1)
        #expect((m.value("allot_wal_fsync_seconds_count") ?? 0) >= 1)
        #expect((m.value("allot_wal_write_seconds_count") ?? 0) >= 1)
        #expect(m.families["allot_cost_usd"] == "counter", "\(m.families)")
        #expect((m.value("allot_cost_usd_total", ["tenant": "research"]) ?? 0) > 0)
        // Other paths are 404, and the daemon carries on.
        let r = try Harness.run(
            "/usr/bin/env",
            [
                "python3", "-c",
                """
                import urllib.request, urllib.error
                try:
                    urllib.request.urlopen("http://127.0.0.1:\(port)/nope")
                except urllib.error.HTTPError as e:
                    print(e.code)
                """,
            ],
            absolute: true
        )
        #expect(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "404")
        #expect(d.ctl(["status"]).status == 0)
    }

    /// contrib/: every metric and label the Grafana dashboard and the alerting rules use is in a real scrape
    /// of allotd (a pool with a tenant's budget, jobs that ran); `promtool check rules` where it is installed.
    @Test(.enabled(if: MetricsTests.havePrometheusClient, "prometheus_client is not installed (.ci/run installs it)"))
    func theDashboardAndAlertsUseOnlyWhatAllotdServes() throws {
        let port = Self.freePort()
        let pool =
            DaemonFixture.defaultPool + """

                [[tenant]]
                name = "research"
                users = ["*"]
                budget = { usd = 100, window = "week", enforcement = "soft" }

                """
        let d = try DaemonFixture(pool: pool, daemon: #"metrics_listen = "127.0.0.1:\#(port)""#)
        let job = try d.submit(["--tenant", "research", "--gpus", "1", "--", "true"])
        try d.wait(job, for: "completed")
        let m = try Self.scrape("http://127.0.0.1:\(port)/metrics")
        #expect(m.value("allot_tenant_budget_usd", ["tenant": "research", "window": "week"]) == 100)
        #expect((m.value("allot_tenant_spent_usd", ["tenant": "research"]) ?? -1) > 0)
        let left = m.value("allot_tenant_budget_window_remaining_seconds", ["tenant": "research"]) ?? -1
        #expect(left > 0 && left <= 7 * 86_400)
        #expect(m.value("allot_nodes", ["state": "up"]) == 2 && m.value("allot_nodes", ["state": "down"]) == 0)
        #expect(m.value("allot_agents", ["link": "down"]) == 0)
        #expect(abs((m.value("allot_start_time_seconds") ?? 0) - Date().timeIntervalSince1970) < 600)
        try Harness.withTempDir { dir in
            let raw = try Harness.run(
                "/usr/bin/env",
                [
                    "python3",
                    Harness.root.appendingPathComponent("Tests/EndToEndTests/testdata/scrape-metrics.py").path,
                    "http://127.0.0.1:\(port)/metrics",
                ],
                absolute: true
            )
            let scrape = dir.appendingPathComponent("scrape.json")
            try raw.stdout.write(to: scrape, atomically: true, encoding: .utf8)
            let check = try Harness.run(
                "/usr/bin/env",
                [
                    "python3",
                    Harness.root.appendingPathComponent("Tests/EndToEndTests/testdata/check-monitoring.py").path,
                    scrape.path, Harness.root.appendingPathComponent("contrib/grafana/allot-dashboard.json").path,
                    Harness.root.appendingPathComponent("contrib/prometheus/allot-rules.yml").path,
                ],
                absolute: true
            )
            #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
            #expect(check.stderr.contains("checked"), "\(check.stderr)")
        }
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/promtool") {
            let r = try Harness.run(
                "/usr/bin/promtool",
                ["check", "rules", Harness.root.appendingPathComponent("contrib/prometheus/allot-rules.yml").path],
                absolute: true
            )
            #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        }
    }

    @Test func aBadMetricsAddressStopsTheStartNamingTheKey() throws {
        let d = try DaemonFixture(daemon: #"metrics_listen = "localhost""#, start: false)
        #expect(throws: (any Error).self) { try d.start() }
        #expect(d.daemonLog.contains("metrics_listen"), "\(d.daemonLog)")
    }
}
