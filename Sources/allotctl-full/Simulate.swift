import AllotConfig
import AllotCore
import AllotSim
import ArgumentParser
import Foundation

struct Simulate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Replay a job trace through the scheduler in virtual time.",
        usage: """
            allotctl simulate --config <POOL.toml> --trace <TRACE.csv> [--policy <policy>] [--json] [<options>]
              allotctl simulate --config <POOL.toml> --services <SERVICES.toml> [--trace <TRACE.csv>] [--scaling peak,knative,allot] [--json]
              allotctl simulate --from-live [--config <POOL.toml>] [--json] [<options>]
              allotctl simulate --openb-nodes <NODES.csv> --openb-pods <PODS.csv> [--placement <RULE,…>] [--seeds <A-B>] [--json]
            """,
        discussion: """
            Reads the pool from a config file (as allotd does) and a CSV trace (see docs/trace-format.md), runs \
            the real scheduler with virtual time — jumping from one arrival or completion to the next — and \
            prints job completion times, queueing delay, utilization, waste and cost.

            With --services, inference services run beside the trace's jobs, each replaying its requests (an \
            Azure LLM inference trace, say), sized three ways side by side: a fixed count for the busiest \
            minute (peak), Knative's autoscaler defaults (knative) and allot's autoscaler (allot); for each, the \
            share of requests a replica took within the service's SLO, waits, replica-hours and cost, and the \
            training jobs' completion times.

            With --openb-nodes and --openb-pods instead, it runs FGD's fragmentation experiment on Alibaba's \
            openb GPU-sharing trace (see docs/fractional-gpus.md): requests arrive until their GPU demand \
            reaches --demand times the pool, never leave, and each placement rule's allocated share of GPUs is \
            printed at 100% and 130% of arrived demand, averaged over the seeds.
            """
    )

    @Option(name: .long, help: ArgumentHelp("The pool's configuration file.", valueName: "POOL.toml"))
    var config: String?

    @Option(name: .long, help: ArgumentHelp("The job trace (CSV with a header row).", valueName: "TRACE.csv"))
    var trace: String?

    @Flag(
        name: .long,
        help:
            "What-if from the running daemon (admin): its pool and its active jobs, each expected to run for its estimate (running jobs: what is left of it). With --config, on that pool instead."
    )
    var fromLive = false

    @OptionGroup var connection: ConnectionOptions

    @Option(
        name: .long,
        help:
            "Scheduling policy: allot (multifactor priority, cost-aware placement, loans, quotas, budgets, preemption), backfill (a Slurm-like baseline: multifactor priority and EASY backfill on walltimes) or fifo (strict first come, first served)."
    )
    var policy: Scheduler.Policy = .allot

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Run these policies on the same pool and trace, in parallel, and print them side by side (with --json, one object per policy).",
            valueName: "P,P…"
        )
    )
    var compare: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Run these inference services beside the trace's jobs, each replaying its requests (see docs/services.md), and print each one's requests served within its SLO and replica-hours under each --scaling. --trace is optional then.",
            valueName: "SERVICES.toml"
        )
    )
    var services: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "With --services: the sizings side by side. peak: a fixed count for the busiest minute; knative: Knative's autoscaler defaults; allot: allot's autoscaler.",
            valueName: "S,S…"
        )
    )
    var scaling = "peak,knative,allot"

    @Flag(name: .long, help: "Print one JSON object instead of a report.")
    var json = false

    @Option(
        name: .long,
        help: ArgumentHelp("Write the timeline to this file: a CSV row per job and per run.", valueName: "OUT.csv")
    )
    var timeline: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Write a report with charts to this file: a page (.html) or a picture (.svg); with --compare, the policies side by side.",
            valueName: "OUT.html"
        )
    )
    var report: String?

    @Flag(name: .long, help: "Check the scheduler's invariants after every step (slow).")
    var paranoid = false

    @Flag(name: .long, help: "Print every decision and reservation, as they happen, to standard error.")
    var decisions = false

    @Option(
        name: .long,
        help: ArgumentHelp("Seconds a preempted job needs to get back to where it was.", valueName: "SECONDS")
    )
    var restartOverhead: Double = 60

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Training jobs checkpoint only this often (e.g. 30m), and report each as allotctl checkpoint does, not on a stop's notice: a stop loses the work since the last checkpoint. Default: on the notice.",
            valueName: "DURATION"
        )
    )
    var checkpointEvery: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "How the inference reserve is lent: forecast (first to jobs expected to end before inference is expected to need it back, then the rest; allotd's rule) or always (first come, first lent; to compare).",
            valueName: "forecast|always"
        )
    )
    var lending: String = "forecast"

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Make the trace's training jobs elastic: a job of N GPUs runs on N/F (at least 1) to N×F GPUs, its duration being its work at N GPUs and its speed linear in its GPUs (trace columns min_gpus, max_gpus, gpu_step, knee_gpus or speedup set a job's own range and curve; with a speedup curve it asks for no more than the size where it runs fastest).",
            valueName: "F"
        )
    )
    var elastic: Int?

    @Flag(
        name: .customLong("hide-speeds"),
        help:
            "Jobs run at their trace's speeds per model (column speeds) but do not tell the scheduler, which then goes by the pool's speed per model: what giving --speed is worth."
    )
    var hideSpeeds = false

    @OptionGroup(title: "Fractional placement (FGD's experiment on an openb trace)") var packing: PackingOptions

    func validate() throws {
        if let elastic, elastic < 2 {
            throw ValidationError("--elastic: expected a factor of 2 or more, got \(elastic)")
        }
        if packing.given {
            try packing.validate()
            if fromLive || trace != nil {
                throw ValidationError("--openb-pods replays FGD's experiment; it takes no --trace or --from-live")
            }
            return
        }
        if fromLive && trace != nil { throw ValidationError("give either --trace or --from-live, not both") }
        if services != nil {
            _ = try Self.scalings(scaling)
            if fromLive || compare != nil || timeline != nil || report != nil || decisions {
                throw ValidationError(
                    "--services compares sizings side by side on one policy; it takes no --from-live, --compare, --timeline, --report or --decisions"
                )
            }
            return
        }
        if let compare {
            let policies = try Self.policies(compare)
            if policies.count < 2 {
                throw ValidationError("--compare: name two policies or more, e.g. allot,backfill,fifo")
            }
            if timeline != nil || decisions {
                throw ValidationError(
                    "--compare prints the policies side by side; --timeline and --decisions take one policy"
                )
            }
        }
        if let report, !(report.hasSuffix(".html") || report.hasSuffix(".htm") || report.hasSuffix(".svg")) {
            throw ValidationError("--report: name a .html or .svg file, got \"\(report)\"")
        }
        if !fromLive && trace == nil {
            throw ValidationError(
                "give a job trace with --trace, or --from-live, or an openb pod list with --openb-pods"
            )
        }
    }

    func run() async throws {
        if packing.given {
            try await packing.run(json: json)
            return
        }
        if let services {
            try await runServices(services)
            return
        }
        let state: ClusterState
        let jobs: Trace
        let config = self.config ?? (fromLive ? "the live pool" : "/etc/allot/allotd.toml")
        let trace = self.trace ?? "the live queue"
        do {
            if fromLive {
                (state, jobs) = try LiveWhatIf.load(connection: connection, config: self.config)
            } else {
                state = try ConfigFile.load(path: config).makeState()
                var loaded = try Trace.load(path: trace)
                if let f = elastic { loaded.makeElastic(factor: f) }
                if hideSpeeds { loaded.hideSpeeds() }
                jobs = loaded
            }
        } catch let e as ExitCode {
            throw e
        } catch {
            FileHandle.standardError.write(Data("allotctl: \(error)\n".utf8))
            throw ExitCode(1)
        }
        if let compare {
            let policies = try Self.policies(compare)
            let (paranoid, overhead) = (self.paranoid, restartOverhead)
            let (lending, every) = (try lendingRule(), try checkpointSeconds())
            let clock = ContinuousClock()
            let began = clock.now
            // Each policy on its own task: the same pool and trace, values shared.
            let results = try await withThrowingTaskGroup(of: (Int, SimulationResult).self) { group in
                for (i, p) in policies.enumerated() {
                    group.addTask {
                        var sim = Simulator(policy: p)
                        sim.paranoid = paranoid
                        sim.restartOverhead = overhead
                        sim.lending = lending
                        sim.checkpointEvery = every
                        return (i, try sim.run(jobs, on: state))
                    }
                }
                var out: [(Int, SimulationResult)] = []
                for try await r in group { out.append(r) }
                return out.sorted { $0.0 < $1.0 }.map(\.1)
            }
            let summaries = results.enumerated().map { ($0, $1.summary(), Int($1.totalGPUs)) }
            if let report { try write(report, results, trace: trace) }
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try encoder.encode(summaries.map(\.1)), as: UTF8.self))
            } else {
                print(
                    Report.compared(
                        summaries.map(\.1),
                        gpus: summaries.first?.2 ?? 0,
                        config: config,
                        trace: trace,
                        elapsed: clock.now - began
                    )
                )
            }
            return
        }
        var sim = Simulator(policy: policy)
        sim.paranoid = paranoid
        sim.restartOverhead = restartOverhead
        sim.lending = try lendingRule()
        sim.checkpointEvery = try checkpointSeconds()
        if decisions {
            let ids = ExternalIDs(jobs)
            sim.onPass = { now, pass, _ in
                var lines = ""
                for d in pass.decisions {
                    switch d {
                    case .start(let id, let a, let note, let loans):
                        lines += "t=\(Int(now.seconds)) start \(ids[id]) on \(a) (\(note.rule.rawValue))"
                        lines +=
                            loans.isEmpty ? "\n" : " on loan: \(loans.map(\.description).joined(separator: ", "))\n"
                    case .preempt(let id, let by, let grace, let reason):
                        lines +=
                            "t=\(Int(now.seconds)) preempt \(ids[id]) for \(ids[by]) (\(reason.rawValue), grace \(Int(grace))s)\n"
                    case .hold(let id, let slices):
                        lines +=
                            "t=\(Int(now.seconds)) hold \(slices.map(\.description).joined(separator: ",")) for \(ids[id])\n"
                    }
                }
                if let r = pass.reservation, !pass.pending.isEmpty {
                    lines +=
                        "t=\(Int(now.seconds)) reserve for \(ids[r.job]) from \(r.from.map { String(Int($0.seconds)) } ?? "unknown")\(r.allocation.map { " on \($0)" } ?? "")\n"
                }
                if !lines.isEmpty { FileHandle.standardError.write(Data(lines.utf8)) }
            }
        }
        let clock = ContinuousClock()
        let began = clock.now
        let result = try sim.run(jobs, on: state)
        let elapsed = clock.now - began
        let summary = result.summary()
        if let report { try write(report, [result], trace: trace) }
        if let timeline { try save(result.timelineCSV(), to: timeline) }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(summary), as: UTF8.self))
        } else {
            print(Report.text(summary, gpus: Int(result.totalGPUs), config: config, trace: trace, elapsed: elapsed))
        }
    }
}

extension Scheduler.Policy: ExpressibleByArgument {}

extension Simulate {
    /// Writes the report (`--report`): HTML, or SVG when the file's name ends in `.svg`.
    func write(_ path: String, _ results: [SimulationResult], trace: String) throws {
        let name = (trace as NSString).lastPathComponent
        let title = "allot simulation: \(name), \(Int(results.first?.totalGPUs ?? 0)) GPUs"
        try save(SimulationReport.render(results, title: title, svg: path.hasSuffix(".svg")), to: path)
    }

    /// Writes an output file, or says why it could not (exit 1).
    func save(_ text: String, to path: String) throws {
        do {
            try text.write(toFile: path, atomically: true, encoding: .utf8)
        } catch {
            FileHandle.standardError.write(Data("allotctl: cannot write \(path): \(error.localizedDescription)\n".utf8))
            throw ExitCode(1)
        }
    }
}

extension Simulate {
    /// `allot,backfill,fifo`: the policies, each once, in the order given.
    func lendingRule() throws -> Scheduler.Lending {
        guard let l = Scheduler.Lending(rawValue: lending) else {
            throw ValidationError(
                "--lending: no rule \"\(lending)\"; the rules are \(Scheduler.Lending.allCases.map(\.rawValue).joined(separator: ", "))"
            )
        }
        return l
    }

    func checkpointSeconds() throws -> Seconds? {
        guard let text = checkpointEvery else { return nil }
        guard let s = DurationText.parse(text), s > 0 else {
            throw ValidationError("--checkpoint-every: \"\(text)\" is not a duration above zero (e.g. 30m, 1h, 900s)")
        }
        return s
    }

    static func policies(_ text: String) throws -> [Scheduler.Policy] {
        var out: [Scheduler.Policy] = []
        for word in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !word.isEmpty {
            guard let p = Scheduler.Policy(rawValue: word) else {
                throw ValidationError(
                    "--compare: no policy \"\(word)\"; the policies are \(Scheduler.Policy.allCases.map(\.rawValue).joined(separator: ", "))"
                )
            }
            if !out.contains(p) { out.append(p) }
        }
        return out
    }
}

/// Trace ids of simulated jobs: the simulator numbers jobs in submit order.
struct ExternalIDs: Sendable {
    let names: [String]
    init(_ trace: Trace) { names = trace.jobs.map(\.id) }
    subscript(_ id: JobID) -> String {
        let i = Int(id.rawValue) - 1
        return i >= 0 && i < names.count ? names[i] : id.description
    }
}

/// The human report of a simulation.
enum Report {
    static func d(_ v: Double) -> String { DurationText.format(v) }
    static func pct(_ v: Double) -> String { String(format: "%.1f%%", v * 100) }
    static func pad(_ s: String, _ w: Int) -> String {
        s.count >= w ? s : s + String(repeating: " ", count: w - s.count)
    }
    static func lpad(_ s: String, _ w: Int) -> String {
        s.count >= w ? s : String(repeating: " ", count: w - s.count) + s
    }
    static func seconds(_ elapsed: Duration) -> String {
        let secs = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return String(format: "%.2f", secs)
    }

    /// Policies side by side: one column each, and each figure against the first policy's.
    static func compared(
        _ all: [SimulationResult.Summary],
        gpus: Int,
        config: String,
        trace: String,
        elapsed: Duration
    ) -> String {
        let width = max(14, all.map { $0.policy.count + 2 }.max() ?? 0)
        let first = all[0]
        var out = "allot simulation: \(all.count) policies, \(first.jobs) jobs on \(gpus) GPUs (\(config), \(trace))\n"
        out += pad("", 22) + all.map { lpad($0.policy, width) }.joined() + "\n"
        func row(_ name: String, _ value: (SimulationResult.Summary) -> String) {
            out += pad("  " + name, 22) + all.map { lpad(value($0), width) }.joined() + "\n"
        }
        /// A figure and, after the first column, its ratio to the first policy's.
        func ratioRow(_ name: String, _ v: (SimulationResult.Summary) -> Double, _ text: (Double) -> String) {
            row(name) { text(v($0)) }
            guard v(first) > 0 else { return }
            out += pad("    × " + first.policy, 22)
            out += all.map { lpad(String(format: "%.2f×", v($0) / v(first)), width) }.joined() + "\n"
        }
        row("completed") { "\($0.completed) of \($0.jobs)" }
        ratioRow("makespan", \.makespan, d)
        ratioRow("avg JCT", \.avgJCT, d)
        row("p50 JCT") { d($0.p50JCT) }
        row("p99 JCT") { d($0.p99JCT) }
        ratioRow("avg wait", \.avgWait, d)
        row("p99 wait") { d($0.p99Wait) }
        for kind in JobKind.allCases where all.contains(where: { ($0.byKind[kind.rawValue]?.jobs ?? 0) > 0 }) {
            row("\(kind.rawValue) avg JCT") { d($0.byKind[kind.rawValue]?.avgJCT ?? 0) }
            row("\(kind.rawValue) p99 wait") { d($0.byKind[kind.rawValue]?.p99Wait ?? 0) }
        }
        row("utilization") { pct($0.utilization) }
        row("waste") { pct($0.waste) }
        ratioRow("cost", \.costUSD) { "$" + Money.format($0) }
        row("$/GPU-h") { "$" + Money.format($0.costPerGPUHour) }
        row("preemptions") { String($0.preemptions) }
        row("reclaims") { String($0.reclaims) }
        row("moves") { String($0.moves) }
        row("grows / shrinks") { "\($0.grows) / \($0.shrinks)" }
        row("loans") { String($0.loans) }
        row("timed out") { String($0.timedOut) }
        row("never start") { String($0.unschedulable) }
        out += "  simulated in \(seconds(elapsed)) s"
        return out
    }

    static func text(
        _ s: SimulationResult.Summary,
        gpus: Int,
        config: String,
        trace: String,
        elapsed: Duration
    ) -> String {
        var out = "allot simulation: policy \(s.policy), \(s.jobs) jobs on \(gpus) GPUs (\(config), \(trace))\n"
        out +=
            "  completed     \(s.completed) of \(s.jobs) (\(s.unschedulable) can never start on this pool, \(s.timedOut) timed out)\n"
        out += "  makespan      \(d(s.makespan))\n"
        out += "  JCT           avg \(d(s.avgJCT)), p50 \(d(s.p50JCT)), p99 \(d(s.p99JCT))\n"
        out += "  wait          avg \(d(s.avgWait)), p50 \(d(s.p50Wait)), p99 \(d(s.p99Wait))\n"
        out +=
            "  utilization   \(pct(s.utilization)) of GPU time allocated; waste \(pct(s.waste)) (idle while a pending job fit)\n"
        out +=
            "  cost          $\(Money.format(s.costUSD)) for \(String(format: "%.1f", s.gpuHours)) GPU-hours ($\(Money.format(s.costPerGPUHour))/GPU-h)\n"
        out +=
            "  preemptions   \(s.preemptions) by priority or attained service, \(s.reclaims) to take lent GPUs back, \(s.moves) move(s) to faster GPUs\(s.grows + s.shrinks > 0 ? ", elastic jobs grew \(s.grows) and shrank \(s.shrinks) time(s)" : ""); \(s.loans) job(s) started on lent GPUs\n"
        if let r = s.reserve {
            out +=
                "  reserve       \(r.loans) loan(s) of the inference reserve, \(r.takenBack) taken back (\(pct(r.takenBackShare))), losing \(String(format: "%.1f", r.lostGPUHours)) GPU-hours; spill-over to dearer GPUs \(String(format: "%.1f", r.spillOverHours)) replica-hours, $\(Money.format(r.spillOverUSD)) extra\n"
        }
        if s.budgetViolations > 0 {
            out += "  budgets       \(s.budgetViolations) (tenant, window) pair(s) spent past a budget\n"
        }
        out +=
            "  by kind       "
            + ["jobs", "done", "avg JCT", "p99 JCT", "avg wait", "p99 wait", "cost"].enumerated().map {
                $0.offset == 0 ? lpad($0.element, 6) : lpad($0.element, $0.offset == 6 ? 14 : 10)
            }.joined() + "\n"
        for kind in JobKind.allCases {
            guard let f = s.byKind[kind.rawValue], f.jobs > 0 else { continue }
            out += "    " + pad(kind.rawValue, 12)
            out +=
                lpad(String(f.jobs), 6) + lpad(String(f.completed), 10) + lpad(d(f.avgJCT), 10) + lpad(d(f.p99JCT), 10)
            out += lpad(d(f.avgWait), 10) + lpad(d(f.p99Wait), 10) + lpad("$" + Money.format(f.costUSD), 14) + "\n"
        }
        if !s.byTenant.isEmpty {
            out += "  by tenant     " + lpad("jobs", 6) + lpad("GPU-hours", 12) + lpad("cost", 14) + "\n"
            let tenants = s.byTenant.sorted {
                $0.value.costUSD != $1.value.costUSD ? $0.value.costUSD > $1.value.costUSD : $0.key < $1.key
            }
            for (name, f) in tenants.prefix(12) {
                out += "    " + pad(name, 12) + lpad(String(f.jobs), 6) + lpad(String(format: "%.1f", f.gpuHours), 12)
                out += lpad("$" + Money.format(f.costUSD), 14) + "\n"
            }
            if tenants.count > 12 { out += "    … and \(tenants.count - 12) more tenants (--json lists them all)\n" }
        }
        if !s.neverStart.isEmpty {
            out += "  never start   \(s.unschedulable) job(s) this pool can never run:\n"
            for n in s.neverStart.prefix(10) { out += "    \(n.id): \(n.reason)\n" }
            if s.unschedulable > 10 { out += "    … and \(s.unschedulable - 10) more (--json lists up to 1,000)\n" }
        }
        out += "  simulated in \(seconds(elapsed)) s (\(s.passes) scheduling passes)"
        return out
    }
}
