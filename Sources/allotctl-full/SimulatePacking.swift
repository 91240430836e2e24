import AllotCore
import AllotSim
import ArgumentParser
import Foundation

/// `allotctl simulate --openb-nodes … --openb-pods …`: FGD's fragmentation experiment, one or more placement
/// rules side by side on the same arrivals.
struct PackingOptions: ParsableArguments {
    @Option(
        name: .long,
        help: ArgumentHelp("An openb node list (sn,cpu_milli,memory_mib,gpu,model).", valueName: "NODES.csv")
    )
    var openbNodes: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "An openb pod list (name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,…).",
            valueName: "PODS.csv"
        )
    )
    var openbPods: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Placement rules to compare, in one run: allot (the least GPU stranded, fragmented or taken from a scarce model), fgd (FGD as published), bestfit, packing, random.",
            valueName: "RULE,…"
        )
    )
    var placement: String = "allot,fgd,bestfit,packing,random"

    @Option(name: .long, help: ArgumentHelp("Seeds: a range or a list (FGD's are 42-51).", valueName: "A-B|A,B,…"))
    var seeds: String = "42-51"

    @Option(
        name: .long,
        help: ArgumentHelp("Arrived GPU demand at the end, times the pool's GPUs.", valueName: "RATIO")
    )
    var demand: Double = 1.3

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Write the mean curves (rule, arrived %, allocation %, fragmentation %) to this CSV file.",
            valueName: "OUT.csv"
        )
    )
    var curve: String?

    var given: Bool { openbNodes != nil || openbPods != nil }

    /// Argument parser validates option groups on their own: nothing to check when the experiment is not asked for.
    func validate() throws {
        guard given else { return }
        guard openbNodes != nil, openbPods != nil else {
            throw ValidationError("FGD's experiment needs both --openb-nodes and --openb-pods")
        }
        _ = try rules()
        _ = try seedList()
        guard demand > 0 && demand <= 10 else { throw ValidationError("--demand must be in (0, 10], got \(demand)") }
    }

    func rules() throws -> [FractionPool.Rule] {
        try placement.split(separator: ",").map {
            let name = $0.trimmingCharacters(in: .whitespaces)
            guard let r = FractionPool.Rule(rawValue: name) else {
                throw ValidationError(
                    "unknown placement rule \"\(name)\" (known: \(FractionPool.Rule.allCases.map(\.rawValue).joined(separator: ", ")))"
                )
            }
            return r
        }
    }

    func seedList() throws -> [UInt64] {
        var out: [UInt64] = []
        for part in seeds.split(separator: ",") {
            let bounds = part.split(separator: "-", omittingEmptySubsequences: false)
            if bounds.count == 2, let a = UInt64(bounds[0]), let b = UInt64(bounds[1]), a <= b, b - a < 10_000 {
                out += Array(a...b)
            } else if bounds.count == 1, let a = UInt64(bounds[0]) {
                out.append(a)
            } else {
                throw ValidationError("--seeds: \"\(part)\" is neither a seed nor a range A-B (e.g. 42-51)")
            }
        }
        guard !out.isEmpty else { throw ValidationError("--seeds names no seed") }
        return out
    }

    /// Summary of one rule over the seeds.
    struct RuleSummary: Codable {
        var rule: String
        var seeds: Int
        /// Mean allocation (% of GPUs) when arrived demand is 100% of the pool, and its spread over the seeds.
        var allocationAt100: Double
        var allocationAt100StdDev: Double
        /// Mean allocation at the end (arrived demand = `demand`).
        var allocationAtEnd: Double
        /// Mean fragmentation ratio (% of free GPU) at 50%, 80% and 90% arrived demand.
        var fragmentationAt50: Double
        var fragmentationAt80: Double
        var fragmentationAt90: Double
        var placed: Double
        var failed: Double
        /// Mean allocation and fragmentation at each whole percent of arrived demand.
        var allocation: [Double]
        var fragmentation: [Double]
    }

    func run(json: Bool) async throws {
        let trace: OpenbTrace
        do {
            trace = try OpenbTrace.load(nodes: openbNodes!, pods: openbPods!)
        } catch {
            FileHandle.standardError.write(Data("allotctl: \(error)\n".utf8))
            throw ExitCode(1)
        }
        var experiment = PackingExperiment(trace: trace)
        experiment.demand = demand
        let rules = try rules()
        let seeds = try seedList()
        let started = ContinuousClock.now
        let runs = await withTaskGroup(of: PackingExperiment.Run.self) { group in
            for rule in rules {
                for seed in seeds {
                    group.addTask { [experiment] in experiment.run(rule: rule, seed: seed) }
                }
            }
            var out: [PackingExperiment.Run] = []
            for await r in group { out.append(r) }
            return out
        }
        let elapsed = ContinuousClock.now - started
        let summaries = rules.map { rule in summarize(runs.filter { $0.rule == rule.rawValue }, rule: rule) }
        if let curve { try writeCurve(summaries, to: curve) }
        if json {
            struct Out: Codable {
                var nodes: Int
                var gpus: Int
                var pods: Int
                var demand: Double
                var rules: [RuleSummary]
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let out = Out(
                nodes: trace.nodes.count,
                gpus: trace.gpus,
                pods: trace.pods.count,
                demand: demand,
                rules: summaries
            )
            print(String(decoding: try encoder.encode(out), as: UTF8.self))
            return
        }
        print(table(summaries, trace: trace, seeds: seeds, elapsed: elapsed))
    }

    private func summarize(_ runs: [PackingExperiment.Run], rule: FractionPool.Rule) -> RuleSummary {
        let n = Double(runs.count)
        let points = runs.map(\.allocation.count).min() ?? 0
        func mean(_ f: (PackingExperiment.Run) -> Double) -> Double { runs.reduce(0) { $0 + f($1) } / n }
        let at100 = runs.map { $0.allocation[min(100, $0.allocation.count - 1)] }
        let m100 = at100.reduce(0, +) / n
        let sd = (at100.reduce(0) { $0 + ($1 - m100) * ($1 - m100) } / max(n - 1, 1)).squareRoot()
        func frag(_ k: Int) -> Double { mean { $0.fragmentation[min(k, $0.fragmentation.count - 1)] } }
        return RuleSummary(
            rule: rule.rawValue,
            seeds: runs.count,
            allocationAt100: m100,
            allocationAt100StdDev: sd,
            allocationAtEnd: mean { $0.allocation.last ?? 0 },
            fragmentationAt50: frag(50),
            fragmentationAt80: frag(80),
            fragmentationAt90: frag(90),
            placed: mean { Double($0.placed) },
            failed: mean { Double($0.failed) },
            allocation: (0..<points).map { k in mean { $0.allocation[k] } },
            fragmentation: (0..<points).map { k in mean { $0.fragmentation[k] } }
        )
    }

    private func table(_ s: [RuleSummary], trace: OpenbTrace, seeds: [UInt64], elapsed: Duration) -> String {
        func f(_ v: Double) -> String { String(format: "%.1f", v) }
        func lpad(_ s: String, _ w: Int) -> String { s.count >= w ? s : String(repeating: " ", count: w - s.count) + s }
        let end = Int((demand * 100).rounded())
        var out =
            "FGD's experiment: \(trace.pods.count) pods (\(openbPods!)) arriving until \(end)% of \(trace.gpus) GPUs on \(trace.nodes.count) nodes, \(seeds.count) seed(s)\n"
        out += "  allocated: % of the pool's GPUs in use when the arrived GPU demand reaches 100% / \(end)%\n"
        out += "  fragmented: % of the free GPU capacity that the expected requests could not use\n"
        out += "  " + "rule".padding(toLength: 9, withPad: " ", startingAt: 0)
        out += ["alloc@100", "±sd", "alloc@\(end)", "frag@50", "frag@80", "frag@90", "failed"].map { lpad($0, 10) }
            .joined()
        out += "\n"
        for r in s {
            out += "  " + r.rule.padding(toLength: 9, withPad: " ", startingAt: 0)
            out += [
                f(r.allocationAt100), f(r.allocationAt100StdDev), f(r.allocationAtEnd), f(r.fragmentationAt50),
                f(r.fragmentationAt80), f(r.fragmentationAt90), String(Int(r.failed.rounded())),
            ].map { lpad($0, 10) }.joined()
            out += "\n"
        }
        let secs = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        out += "  simulated in \(String(format: "%.1f", secs)) s"
        return out
    }

    private func writeCurve(_ s: [RuleSummary], to path: String) throws {
        var text = "rule,arrived_pct,allocation_pct,fragmentation_pct\n"
        for r in s {
            for k in r.allocation.indices {
                text +=
                    "\(r.rule),\(k),\(String(format: "%.3f", r.allocation[k])),\(String(format: "%.3f", r.fragmentation[k]))\n"
            }
        }
        do { try text.write(toFile: path, atomically: true, encoding: .utf8) } catch {
            FileHandle.standardError.write(Data("allotctl: cannot write \(path): \(error.localizedDescription)\n".utf8))
            throw ExitCode(1)
        }
    }
}
