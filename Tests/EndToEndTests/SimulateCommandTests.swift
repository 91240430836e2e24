import Foundation
import Testing

@Suite struct SimulateCommandTests {
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
            #expect(rows.first == "id,kind,tenant,state,submit,start,end,node,gpus,gpu_model,cost")
            #expect(rows.count > 500)
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
