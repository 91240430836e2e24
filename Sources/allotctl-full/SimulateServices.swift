import AllotConfig
import AllotCore
import AllotSim
import ArgumentParser
import Foundation

/// `allotctl simulate --services`: inference services, each replaying its request trace, beside the training
/// trace, under each sizing side by side.
extension Simulate {
    /// `peak,knative,allot`: the sizings, each once, in the order given.
    static func scalings(_ text: String) throws -> [ServiceScaling] {
        var out: [ServiceScaling] = []
        for word in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !word.isEmpty {
            guard let s = ServiceScaling(rawValue: word) else {
                throw ValidationError(
                    "--scaling: no sizing \"\(word)\"; the sizings are \(ServiceScaling.allCases.map(\.rawValue).joined(separator: ", "))"
                )
            }
            if !out.contains(s) { out.append(s) }
        }
        if out.isEmpty { throw ValidationError("--scaling: name one sizing or more, e.g. peak,knative,allot") }
        return out
    }

    /// What one sizing produced: the services' figures and the training trace's summary.
    struct ServiceRun: Encodable {
        var scaling: String
        var services: [ServiceFigures]
        var training: SimulationResult.Summary
    }

    func runServices(_ path: String) async throws {
        let scalings = try Self.scalings(scaling)
        let config = self.config ?? "/etc/allot/allotd.toml"
        let traceName = trace ?? "no training trace"
        let state: ClusterState
        let jobs: Trace
        let entries: [ServiceWorkload.Entry]
        do {
            state = try ConfigFile.load(path: config).makeState()
            jobs = try trace.map { p throws(TraceError) in try Trace.load(path: p) } ?? Trace(jobs: [])
            let file = try ServiceLoadFile.load(path: path, models: state.config.gpuModels)
            entries = try file.services.map { s throws(TraceError) in
                ServiceWorkload.Entry(service: s, trace: try RequestTrace.load(path: s.requests))
            }
        } catch {
            FileHandle.standardError.write(Data("allotctl: \(error)\n".utf8))
            throw ExitCode(1)
        }
        let (policy, paranoid, overhead) = (self.policy, self.paranoid, restartOverhead)
        let clock = ContinuousClock()
        let began = clock.now
        // Each sizing on its own task: the same pool, trace and requests.
        let results = try await withThrowingTaskGroup(of: (Int, SimulationResult).self) { group in
            for (i, s) in scalings.enumerated() {
                group.addTask {
                    var sim = Simulator(policy: policy)
                    sim.paranoid = paranoid
                    sim.restartOverhead = overhead
                    sim.services = ServiceWorkload(entries: entries, scaling: s)
                    return (i, try sim.run(jobs, on: state))
                }
            }
            var out: [(Int, SimulationResult)] = []
            for try await r in group { out.append(r) }
            return out.sorted { $0.0 < $1.0 }.map(\.1)
        }
        let runs = zip(scalings, results).map { s, r in
            ServiceRun(scaling: s.rawValue, services: r.services, training: r.summary())
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(runs), as: UTF8.self))
        } else {
            let title =
                "allot simulation: \(entries.count) service\(entries.count == 1 ? "" : "s") beside \(jobs.jobs.count) jobs on \(Int(results.first?.totalGPUs ?? 0)) GPUs (\(config), \(path), \(traceName))"
            print(Report.services(runs, title: title, elapsed: clock.now - began))
        }
    }
}

extension Report {
    /// The sizings side by side: per service, all services, and the training jobs; ratios to the first.
    static func services(_ runs: [Simulate.ServiceRun], title: String, elapsed: Duration) -> String {
        let width = max(12, runs.map { $0.scaling.count + 2 }.max() ?? 0)
        var out = title + "\n"
        func header(_ name: String) { out += pad(name, 24) + runs.map { lpad($0.scaling, width) }.joined() + "\n" }
        func row(_ name: String, _ value: (Simulate.ServiceRun) -> String) {
            out += pad("  " + name, 24) + runs.map { lpad(value($0), width) }.joined() + "\n"
        }
        func ratio(_ v: (Simulate.ServiceRun) -> Double) {
            guard let first = runs.first, v(first) > 0 else { return }
            out += pad("    × " + first.scaling, 24)
            out += runs.map { lpad(String(format: "%.2f×", v($0) / v(first)), width) }.joined() + "\n"
        }
        func secs(_ v: Double) -> String { v < 10 ? String(format: "%.2fs", v) : d(v) }
        let names = runs.first?.services.map(\.name) ?? []
        for (i, name) in names.enumerated() {
            guard let s = runs.first?.services[i] else { continue }
            header("service \(name)")
            row("requests") { String($0.services[i].requests) }
            row("within \(secs(s.slo)) wait") { pct($0.services[i].sloShare) }
            row("p50 wait") { secs($0.services[i].p50Wait) }
            row("p99 wait") { secs($0.services[i].p99Wait) }
            row("replica-hours") { String(format: "%.1f", $0.services[i].replicaHours) }
            ratio { $0.services[i].replicaHours }
            row("GPU-hours") { String(format: "%.1f", $0.services[i].gpuHours) }
            row("cost") { "$" + Money.format($0.services[i].costUSD) }
            row("replicas") { "\($0.services[i].fewestReplicas)–\($0.services[i].mostReplicas)" }
            row("resizes") { String($0.services[i].resizes) }
            row("replica starts") { String($0.services[i].starts) }
        }
        if names.count > 1 {
            header("all services")
            row("within SLO") { r in
                let n = r.services.reduce(0) { $0 + $1.requests }
                return pct(n > 0 ? Double(r.services.reduce(0) { $0 + $1.withinSLO }) / Double(n) : 1)
            }
            row("replica-hours") { String(format: "%.1f", $0.services.reduce(0) { $0 + $1.replicaHours }) }
            ratio { $0.services.reduce(0) { $0 + $1.replicaHours } }
            row("cost") { "$" + Money.format($0.services.reduce(0) { $0 + $1.costUSD }) }
        }
        if let first = runs.first, first.training.jobs > 0 {
            header("training trace")
            row("completed") { "\($0.training.completed) of \($0.training.jobs)" }
            row("avg JCT") { d($0.training.avgJCT) }
            ratio { $0.training.avgJCT }
            row("p99 JCT") { d($0.training.p99JCT) }
            row("avg wait") { d($0.training.avgWait) }
            row("makespan") { d($0.training.makespan) }
            row("utilization") { pct($0.training.utilization) }
            row("preemptions") { String($0.training.preemptions) }
            row("reclaims") { String($0.training.reclaims) }
        }
        out += "  simulated in \(seconds(elapsed)) s"
        return out
    }
}
