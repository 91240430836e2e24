import Foundation
import Testing

@Suite struct SimulateCommandTests {
    /// FGD's experiment from the command line on a small openb-format pool: every rule in one run, the JSON
    /// summary and the curve file; a bad row is refused with its file, line and column.
    @Test func runsFGDsExperimentOnOpenbFiles() throws {
        try Harness.withTempDir { dir in
            let nodes = dir.appendingPathComponent("nodes.csv")
            let pods = dir.appendingPathComponent("pods.csv")
            var nodeText = "sn,cpu_milli,memory_mib,gpu,model\n"
            for i in 0..<12 {
                nodeText +=
                    "n\(i),\(i % 3 == 0 ? 24000 : 96000),262144,\(i % 2 == 0 ? 8 : 4),\(i % 4 == 0 ? "V100" : "T4")\n"
            }
            var podText = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n"
            for i in 0..<200 {
                let gpus = [0, 1, 1, 1, 2, 8][i % 6]
                let milli = gpus == 1 ? [250, 500, 1000, 300][i % 4] : 0
                podText +=
                    "p\(i),\(1000 * (1 + i % 12)),\(1024 * (2 + i % 30)),\(gpus),\(milli),\(i % 10 == 0 ? "V100" : "")\n"
            }
            try nodeText.write(to: nodes, atomically: true, encoding: .utf8)
            try podText.write(to: pods, atomically: true, encoding: .utf8)
            let curve = dir.appendingPathComponent("curve.csv").path
            let args = ["simulate", "--openb-nodes", nodes.path, "--openb-pods", pods.path, "--seeds", "1-3"]
            let r = try Harness.run("allotctl", args + ["--json", "--curve", curve])
            #expect(r.status == 0, "\(r.stderr)")
            let object = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
            #expect(object["nodes"] as? Int == 12 && object["gpus"] as? Int == 72 && object["pods"] as? Int == 200)
            let rules = object["rules"] as! [[String: Any]]
            #expect(rules.map { $0["rule"] as! String } == ["allot", "fgd", "bestfit", "packing", "random"])
            for rule in rules {
                #expect(rule["seeds"] as? Int == 3)
                let at100 = rule["allocationAt100"] as! Double
                #expect(at100 > 30 && at100 <= 100, "\(rule)")
                #expect((rule["allocation"] as! [Double]).count == 131)
            }
            let rows = try String(contentsOfFile: curve, encoding: .utf8).split(separator: "\n")
            #expect(rows.first == "rule,arrived_pct,allocation_pct,fragmentation_pct")
            #expect(rows.count == 1 + 5 * 131)
            let text = try Harness.run("allotctl", args + ["--placement", "allot,bestfit"])
            #expect(text.status == 0, "\(text.stderr)")
            #expect(text.stdout.contains("alloc@100") && text.stdout.contains("bestfit"), "\(text.stdout)")
            try podText.replacingOccurrences(of: "p7,8000,", with: "p7,many,").write(
                to: pods,
                atomically: true,
                encoding: .utf8
            )
            let bad = try Harness.run("allotctl", args)
            #expect(bad.status != 0)
            #expect(
                bad.stderr.contains("pods.csv:9: column cpu_milli: \"many\" is not a whole number"),
                "\(bad.stderr)"
            )
            let unknown = try Harness.run("allotctl", args + ["--placement", "allot,tetris"])
            #expect(unknown.status != 0)
            #expect(unknown.stderr.contains("unknown placement rule \"tetris\""), "\(unknown.stderr)")
            let half = try Harness.run("allotctl", ["simulate", "--openb-nodes", nodes.path])
            #expect(
                half.status != 0 && half.stderr.contains("needs both --openb-nodes and --openb-pods"),
                "\(half.stderr)"
            )
        }
    }

    @Test func simulatesTheExampleTraceOnTheExamplePool() throws {
        let r = try Harness.run(
            "allotctl",
            ["simulate", "--config", "etc/allot/allotd.toml", "--trace", "examples/trace-mixed.csv", "--json"]
        )
        #expect(r.status == 0, "\(r.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        let jobs = object["jobs"] as! Int
        #expect(jobs > 500)
        #expect(object["completed"] as? Int == jobs)
        #expect((object["utilization"] as! Double) > 0.2)
    }

    /// Policies side by side: one table with ratios to the first, one JSON object per policy, each the same
    /// as that policy's own run.
    @Test func comparePrintsThePoliciesSideBySide() throws {
        let base = ["simulate", "--config", "etc/allot/allotd.toml", "--trace", "examples/trace-mixed.csv"]
        let r = try Harness.run("allotctl", base + ["--compare", "allot,backfill,fifo"])
        #expect(r.status == 0, "\(r.stderr)")
        let lines = r.stdout.split(separator: "\n").map(String.init)
        #expect(lines.contains { $0.contains("allot") && $0.contains("backfill") && $0.contains("fifo") })
        let jct = try #require(lines.firstIndex { $0.hasPrefix("  avg JCT") })
        #expect(lines[jct + 1].contains("× allot") && lines[jct + 1].contains("1.00×"), "\(r.stdout)")
        let j = try Harness.run("allotctl", base + ["--compare", "allot,fifo", "--json"])
        #expect(j.status == 0, "\(j.stderr)")
        let all = try #require(try JSONSerialization.jsonObject(with: Data(j.stdout.utf8)) as? [[String: Any]])
        #expect(all.map { $0["policy"] as? String } == ["allot", "fifo"])
        let fifo = try Harness.run("allotctl", base + ["--policy", "fifo", "--json"])
        let alone = try #require(try JSONSerialization.jsonObject(with: Data(fifo.stdout.utf8)) as? [String: Any])
        #expect(all[1]["avgJCT"] as? Double == alone["avgJCT"] as? Double, "the same run as alone")
        let bad = try Harness.run("allotctl", base + ["--compare", "allot,tetris"])
        #expect(bad.status == 2 && bad.stderr.contains("no policy \"tetris\""), "\(bad.stderr)")
    }

    /// Services replaying Azure's code requests (examples/), sized three ways side by side; bad input is
    /// refused with what was wrong.
    @Test func servicesAreSizedThreeWaysSideBySide() throws {
        let base = ["simulate", "--config", "etc/allot/allotd.toml", "--services", "examples/services.toml"]
        let j = try Harness.run("allotctl", base + ["--json"])
        #expect(j.status == 0, "\(j.stderr)")
        let all = try #require(try JSONSerialization.jsonObject(with: Data(j.stdout.utf8)) as? [[String: Any]])
        #expect(all.map { $0["scaling"] as? String } == ["peak", "knative", "allot"])
        let code = all.map { (($0["services"] as? [[String: Any]]) ?? []).first ?? [:] }
        #expect(code.allSatisfy { $0["requests"] as? Int == 8819 }, "\(code)")
        #expect(code[0]["fewest_replicas"] as? Int == code[0]["most_replicas"] as? Int, "peak is fixed")
        let hours = code.map { $0["replica_hours"] as? Double ?? 0 }
        #expect(hours[2] < hours[0] && hours[2] < hours[1], "\(hours)")
        let share = code.map { Double($0["within_slo"] as? Int ?? 0) / 8819 }
        #expect(share[2] > share[1] + 0.3, "allot keeps far more within the SLO than Knative's defaults: \(share)")
        let text = try Harness.run("allotctl", base + ["--scaling", "peak,allot"])
        #expect(text.status == 0, "\(text.stderr)")
        #expect(text.stdout.contains("service code") && text.stdout.contains("× peak"), "\(text.stdout)")
        let bad = try Harness.run("allotctl", base + ["--scaling", "peak,hpa"])
        #expect(bad.status == 2 && bad.stderr.contains("no sizing \"hpa\""), "\(bad.stderr)")
        try Harness.withTempDir { dir in
            let file = dir.appendingPathComponent("s.toml")
            try "[[service]]\nname = \"x\"\nrequests = \"r.csv\"\nslos = \"2s\"\n".write(
                to: file,
                atomically: true,
                encoding: .utf8
            )
            let typo = try Harness.run(
                "allotctl",
                ["simulate", "--config", "etc/allot/allotd.toml", "--services", file.path]
            )
            #expect(typo.status == 1 && typo.stderr.contains("slos"), "\(typo.stderr)")
        }
    }

    @Test func reportAndTimeline() throws {
        try Harness.withTempDir { dir in
            let timeline = dir.appendingPathComponent("t.csv").path
            let r = try Harness.run(
                "allotctl",
                [
                    "simulate", "--config", "etc/allot/allotd.toml", "--trace", "examples/trace-mixed.csv", "--policy",
                    "fifo", "--timeline", timeline,
                ]
            )
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stdout.contains("policy fifo"))
            #expect(r.stdout.contains("makespan"))
            let rows = try String(contentsOfFile: timeline, encoding: .utf8).split(separator: "\n")
            #expect(
                rows.first
                    == "record,id,run,kind,tenant,state,submit,start,end,node,gpus,gpu_model,cost,gpu_indices,share,stopped"
            )
            // An independent check: rebuild who held each GPU from the run rows alone.
            let fields = rows.dropFirst().map {
                $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            }
            let jobs = fields.filter { $0[0] == "job" }
            let runs = fields.filter { $0[0] == "run" }
            #expect(jobs.count > 500 && runs.count >= jobs.filter { $0[5] == "completed" }.count)
            var held: [String: [(start: Double, end: Double, job: String)]] = [:]
            for r in runs {
                #expect(r.count == 16, "\(r)")
                guard r.count == 16, r[14].isEmpty, let start = Double(r[7]), let end = Double(r[8]) else { continue }
                #expect(end >= start)
                for part in r[13].split(separator: "+") {
                    let nodeAndGPUs = part.split(separator: ":")
                    for g in nodeAndGPUs[1].split(separator: "|") {
                        held["\(nodeAndGPUs[0]):\(g)", default: []].append((start, end, r[1]))
                    }
                }
                #expect(Int(r[10]) == r[13].split(separator: "+").map { $0.split(separator: "|").count }.reduce(0, +))
            }
            var overlaps = 0
            for (_, spans) in held {
                let sorted = spans.sorted { $0.start < $1.start }
                for (a, b) in zip(sorted, sorted.dropFirst()) where b.start < a.end - 1e-6 { overlaps += 1 }
            }
            #expect(overlaps == 0, "no GPU held by two whole-GPU runs at once")
            // Every completed job's last run finished; every run of a job is there.
            let runsByJob = Dictionary(grouping: runs, by: { $0[1] })
            for j in jobs where j[5] == "completed" {
                let mine = (runsByJob[j[1]] ?? []).sorted { Int($0[2])! < Int($1[2])! }
                #expect(mine.count == Int(j[2]), "\(j)")
                #expect(mine.last?[15] == "finished", "\(j) \(mine)")
            }
        }
    }

    static let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first {
        FileManager.default.isExecutableFile(atPath: $0)
    }

    /// `--report`: a page a real browser draws (headless Chromium's screenshot has the charts' colours),
    /// an SVG that is well-formed XML, the policies side by side; a file of another kind is refused.
    @Test(.enabled(if: SimulateCommandTests.chromium != nil, "needs chromium (make test installs it)"))
    func theReportIsAPageABrowserDraws() throws {
        try Harness.withTempDir { dir in
            // The first 200 jobs of the example trace: two tenants, training and inference.
            let lines = try String(contentsOfFile: "examples/trace-mixed.csv", encoding: .utf8).split(separator: "\n")
            let trace = dir.appendingPathComponent("t.csv")
            try (lines.prefix(201).joined(separator: "\n") + "\n").write(to: trace, atomically: true, encoding: .utf8)
            let html = dir.appendingPathComponent("r.html").path
            let base = ["simulate", "--config", "etc/allot/allotd.toml", "--trace", trace.path]
            let r = try Harness.run("allotctl", base + ["--compare", "allot,fifo", "--report", html])
            #expect(r.status == 0, "\(r.stderr)")
            let page = try String(contentsOfFile: html, encoding: .utf8)
            #expect(page.hasPrefix("<!doctype html>") && page.contains("<th>allot</th><th>fifo</th>"))
            for title in [
                "GPUs over time", "GPUs busy, lent and idle", "Jobs waiting", "Wait of the jobs", "Cost so far",
            ] {
                #expect(page.contains(title), "\(title)")
            }
            #expect(page.components(separatedBy: "<svg").count - 1 >= 13, "three side by side, five per policy")
            // A real browser draws it: the tenants' colours are on the screen.
            let png = dir.appendingPathComponent("r.png").path
            let shot = try Harness.run(
                SimulateCommandTests.chromium!,
                [
                    "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--screenshot=\(png)",
                    "--window-size=1250,2400", "file://\(html)",
                ],
                absolute: true
            )
            #expect(FileManager.default.fileExists(atPath: png), "\(shot.stderr.suffix(2000))")
            let look = try Harness.run(
                "/usr/bin/python3",
                [Harness.root.path + "/Tests/EndToEndTests/testdata/png-colours.py", png, "#1f77b4", "#d62728"],
                absolute: true
            )
            let seen = try #require(try JSONSerialization.jsonObject(with: Data(look.stdout.utf8)) as? [String: Any])
            let colours = try #require(seen["colours"] as? [String: Int])
            #expect((seen["ink"] as? Double ?? 0) > 0.05, "the page is drawn: \(seen)")
            #expect(colours["#1f77b4", default: 0] > 2000 && colours["#d62728", default: 0] > 500, "\(seen)")
            // One SVG picture of one policy: well-formed, bounded.
            let svg = dir.appendingPathComponent("r.svg").path
            let one = try Harness.run("allotctl", base + ["--policy", "allot", "--report", svg])
            #expect(one.status == 0, "\(one.stderr)")
            let parsed = try Harness.run(
                "/usr/bin/python3",
                [
                    "-c",
                    "import sys, xml.etree.ElementTree as E; t = E.parse(sys.argv[1]); print(len(t.getroot().findall('.//{http://www.w3.org/2000/svg}rect')))",
                    svg,
                ],
                absolute: true
            )
            #expect(parsed.status == 0, "well-formed: \(parsed.stderr)")
            #expect((Int(parsed.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0) > 20)
            let bad = try Harness.run("allotctl", base + ["--report", dir.appendingPathComponent("r.pdf").path])
            #expect(bad.status == 2 && bad.stderr.contains("--report"), "\(bad.stderr)")
        }
    }

    /// The text report carries what the JSON has: loans and reclaims, tenants, and the jobs that never run.
    @Test func theReportNamesTenantsLoansAndJobsThatCanNeverRun() throws {
        try Harness.withTempDir { dir in
            let trace = dir.appendingPathComponent("t.csv")
            try "id,tenant,submit_time,duration,gpus\nsmall,alpha,0,60,1\nhuge,beta,0,60,5000\n".write(
                to: trace,
                atomically: true,
                encoding: .utf8
            )
            let args = ["simulate", "--config", "etc/allot/allotd.toml", "--trace", trace.path]
            let r = try Harness.run("allotctl", args)
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stdout.contains("to take lent GPUs back"), "\(r.stdout)")
            #expect(r.stdout.contains("by tenant") && r.stdout.contains("alpha"), "\(r.stdout)")
            #expect(
                r.stdout.contains("never start   1 job(s)") && r.stdout.contains("huge: needs 5000 GPUs"),
                "\(r.stdout)"
            )
            let j = try Harness.run("allotctl", args + ["--json"])
            let object = try #require(try JSONSerialization.jsonObject(with: Data(j.stdout.utf8)) as? [String: Any])
            let never = try #require(object["never_start"] as? [[String: Any]])
            #expect(never.count == 1 && never[0]["id"] as? String == "huge", "\(never)")
        }
    }

    @Test func badConfigExitsNonZeroNamingTheKey() throws {
        try Harness.withTempDir { dir in
            let config = dir.appendingPathComponent("bad.toml")
            try "[[gpu_model]]\nname = \"A\"\nmemory_gib = 80\nprice_per_hour = \"cheap\"\n".write(
                to: config,
                atomically: true,
                encoding: .utf8
            )
            let r = try Harness.run(
                "allotctl",
                ["simulate", "--config", config.path, "--trace", "examples/trace-mixed.csv"]
            )
            #expect(r.status == 1)
            #expect(
                r.stderr.contains(
                    "bad.toml:4: gpu_model[0].price_per_hour: expected a number of at least 0, got \"cheap\""
                )
            )
        }
    }

    @Test func badTraceExitsNonZeroNamingRowAndColumn() throws {
        try Harness.withTempDir { dir in
            let trace = dir.appendingPathComponent("bad.csv")
            try "submit_time,duration,gpus\n0,10,1\n5,ten,1\n".write(to: trace, atomically: true, encoding: .utf8)
            let r = try Harness.run(
                "allotctl",
                ["simulate", "--config", "etc/allot/allotd.toml", "--trace", trace.path]
            )
            #expect(r.status == 1)
            #expect(r.stderr.contains("bad.csv:3: column duration: expected seconds"))
        }
    }

    @Test func helpTextIsStable() throws {
        let r = try Harness.run("allotctl", ["simulate", "--help"])
        #expect(r.status == 0)
        let golden = Harness.root.appendingPathComponent("Tests/EndToEndTests/testdata/simulate-help.txt")
        if ProcessInfo.processInfo.environment["ALLOT_UPDATE_GOLDEN"] == "1" {
            try r.stdout.write(to: golden, atomically: true, encoding: .utf8)
        }
        #expect(
            r.stdout == (try String(contentsOf: golden, encoding: .utf8)),
            "run with ALLOT_UPDATE_GOLDEN=1 to accept a deliberate change"
        )
    }
}
