import AllotConfig
import AllotCore
import DequeModule
import Foundation
import HeapModule

/// One request to an inference service: when it came, and its prompt and output lengths in tokens.
public struct Request: Hashable, Sendable {
    /// Seconds from the trace's first request.
    public var time: Double
    public var context: Int
    public var generated: Int

    public init(time: Double, context: Int, generated: Int) {
        self.time = time
        self.context = context
        self.generated = generated
    }
}

/// A service's requests, in arrival order.
///
/// CSV with a header: Azure's LLM inference traces (`TIMESTAMP,ContextTokens,GeneratedTokens`, the time as
/// `2023-11-16 18:15:46.6805900`), or `time,context_tokens,generated_tokens` with the time in seconds.
public struct RequestTrace: Hashable, Sendable {
    public var requests: [Request]

    public init(requests: [Request]) {
        let first = requests.map(\.time).min() ?? 0
        self.requests = requests.map { Request(time: $0.time - first, context: $0.context, generated: $0.generated) }
            .enumerated().sorted {
                $0.element.time != $1.element.time ? $0.element.time < $1.element.time : $0.offset < $1.offset
            }
            .map(\.element)
    }

    public static func load(path: String) throws(TraceError) -> RequestTrace {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw TraceError(file: path, message: "cannot read the file: \(error.localizedDescription)")
        }
        return try parse(text, file: path)
    }

    public static func parse(_ text: String, file: String? = nil) throws(TraceError) -> RequestTrace {
        var rows = CSVReader(text)
        guard let header = rows.next() else {
            throw TraceError(file: file, line: 1, message: "the file is empty; it needs a header row")
        }
        let names = header.fields.map { $0.trimmingWhitespace().lowercased() }
        func column(_ accepted: [String]) throws(TraceError) -> Int {
            guard let i = names.firstIndex(where: { accepted.contains($0) }) else {
                throw TraceError(
                    file: file,
                    line: 1,
                    message:
                        "no \(accepted[0]) column (the header has \(names.joined(separator: ", ")); expected TIMESTAMP,ContextTokens,GeneratedTokens or time,context_tokens,generated_tokens)"
                )
            }
            return i
        }
        let timeColumn = try column(["time", "timestamp", "arrival_time"])
        let contextColumn = try column(["context_tokens", "contexttokens", "prompt_tokens", "input_tokens"])
        let generatedColumn = try column(["generated_tokens", "generatedtokens", "output_tokens"])
        var out: [Request] = []
        while let row = rows.next() {
            if row.fields.allSatisfy({ $0.trimmingWhitespace().isEmpty }) { continue }
            func field(_ i: Int) throws(TraceError) -> String {
                guard i < row.fields.count else {
                    throw TraceError(file: file, line: row.line, column: names[i], message: "missing")
                }
                return row.fields[i].trimmingWhitespace()
            }
            let timeText = try field(timeColumn)
            guard let time = Double(timeText).flatMap({ $0.isFinite ? $0 : nil }) ?? Self.timestamp(timeText) else {
                throw TraceError(
                    file: file,
                    line: row.line,
                    column: names[timeColumn],
                    message: "\"\(timeText)\" is neither seconds nor a time as 2023-11-16 18:15:46.68"
                )
            }
            var tokens: [Int] = []
            for c in [contextColumn, generatedColumn] {
                let t = try field(c)
                guard let n = Int(t), n >= 0 else {
                    throw TraceError(
                        file: file,
                        line: row.line,
                        column: names[c],
                        message: "\"\(t)\" is not a token count"
                    )
                }
                tokens.append(n)
            }
            out.append(Request(time: time, context: tokens[0], generated: tokens[1]))
        }
        if out.isEmpty { throw TraceError(file: file, line: 2, message: "no requests after the header") }
        return RequestTrace(requests: out)
    }

    /// Seconds since 1970 of `YYYY-MM-DD HH:MM:SS[.fraction]` (or with a `T`), in UTC.
    static func timestamp(_ text: String) -> Double? {
        let parts = text.split(whereSeparator: { $0 == " " || $0 == "T" })
        guard parts.count == 2 else { return nil }
        let date = parts[0].split(separator: "-").compactMap { Int($0) }
        let clock = parts[1].split(separator: ":")
        guard date.count == 3, clock.count == 3, let h = Int(clock[0]), let m = Int(clock[1]),
            let s = Double(clock[2].hasSuffix("Z") ? clock[2].dropLast() : clock[2]), (1...12).contains(date[1]),
            (1...31).contains(date[2]), (0..<24).contains(h), (0..<60).contains(m), (0..<61).contains(s)
        else { return nil }
        // Days from the civil date (Howard Hinnant's algorithm).
        let y = date[1] <= 2 ? date[0] - 1 : date[0]
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (date[1] + 9) % 12
        let doy = (153 * mp + 2) / 5 + date[2] - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146_097 + doe - 719_468
        return Double(days) * 86_400 + Double(h * 3600 + m * 60) + s
    }

    /// Mean requests in service (erlangs) per minute, by a replica model's service time.
    public func loadPerMinute(_ replica: ServiceLoadFile.Replica) -> [Double] {
        guard let last = requests.last else { return [] }
        var out = [Double](repeating: 0, count: Int(last.time / 60) + 1)
        for r in requests {
            out[Int(r.time / 60)] += replica.serviceTime(context: r.context, generated: r.generated) / 60
        }
        return out
    }
}

/// How the simulated services are sized.
public enum ServiceScaling: String, Sendable, CaseIterable, Codable {
    /// A fixed count for the busiest minute (allot's sizing), and no fewer than serve 99% of the requests
    /// within the SLO.
    case peak
    /// Knative's default autoscaler: 70% of a replica's concurrency, 60 s and 6 s windows.
    case knative
    /// allot's autoscaler as the services file sets it (by default: sized by slots, 1% waiting).
    case allot
}

/// Services for the simulator: each with its request trace, replaying from `start` seconds of virtual time.
public struct ServiceWorkload: Sendable {
    public struct Entry: Sendable {
        public var service: ServiceLoadFile.Service
        public var trace: RequestTrace
        public init(service: ServiceLoadFile.Service, trace: RequestTrace) {
            self.service = service
            self.trace = trace
        }

        /// The fixed count of the peak column: what allot's sizing (slots, 1% waiting) asks for the busiest
        /// minute, raised where needed until, always ready, the replicas serve `ServiceWorkload.sloTarget` of
        /// the requests within the SLO (bursts shorter than a minute).
        public var peakReplicas: Int {
            guard let model = service.replicas.first else { return service.minReplicas }
            let busiest = trace.loadPerMinute(model).max() ?? 0
            let sized = Autoscale(slots: model.concurrency, waiting: 0.01).replicas(for: busiest)
            var (lo, hi) = (max(service.minReplicas, 1, sized), service.maxReplicas)
            if lo >= hi || sloShare(replicas: hi, model) < ServiceWorkload.sloTarget { return min(lo, hi) }
            while lo < hi {
                let mid = (lo + hi) / 2
                if sloShare(replicas: mid, model) >= ServiceWorkload.sloTarget { hi = mid } else { lo = mid + 1 }
            }
            return lo
        }

        /// The share of requests taken within the SLO by `replicas` replicas that are always ready: first come,
        /// first served on their slots.
        func sloShare(replicas: Int, _ model: ServiceLoadFile.Replica) -> Double {
            guard !trace.requests.isEmpty else { return 1 }
            var free = Heap<Double>(Array(repeating: 0, count: replicas * model.concurrency))
            var within = 0
            for r in trace.requests {
                let slot = free.popMin() ?? 0
                let start = max(slot, r.time)
                if start - r.time <= service.slo + 1e-9 { within += 1 }
                free.insert(start + model.serviceTime(context: r.context, generated: r.generated))
            }
            return Double(within) / Double(trace.requests.count)
        }

        /// The service as allot runs it under `scaling`, and its first size (what the first minute needs, as
        /// if it had been serving before).
        func spec(_ scaling: ServiceScaling) -> (ServiceSpec, Int) {
            let s = service
            var template = JobSpec(name: s.name, tenant: s.tenant, kind: .inference, gpus: s.gpus)
            template.gpuShare = s.gpuShare
            template.priorityClass = s.priorityClass
            template.gpuModels = s.replicas.map(\.gpuModel)
            template.command = ["model-server"]
            let autoscale: Autoscale? =
                switch scaling {
                case .peak: nil
                case .knative: s.knativeAutoscale
                case .allot: s.allotAutoscale
                }
            let peak = peakReplicas
            let (low, high) = autoscale == nil ? (peak, peak) : (s.minReplicas, s.maxReplicas)
            // The busiest of the first five minutes, as if it had been serving that load before.
            let first = trace.loadPerMinute(s.replicas[0]).prefix(5).max() ?? 0
            let initial = autoscale.map { min(max($0.replicas(for: first), low, 1), high) } ?? peak
            let spec = ServiceSpec(
                name: s.name,
                template: template,
                minReplicas: low,
                maxReplicas: high,
                autoscale: autoscale
            )
            return (spec, initial)
        }
    }

    /// The share of requests within the SLO that peak provisioning is sized for.
    public static let sloTarget = 0.99

    public var entries: [Entry]
    public var scaling: ServiceScaling
    /// When the first requests come (the services are created at 0, so that their first replicas are
    /// ready).
    public var start: Double = 300
    /// How often the replicas' load is read (allotd scrapes every 2 s).
    public var sampleInterval: Double = 2

    public init(entries: [Entry], scaling: ServiceScaling) {
        self.entries = entries
        self.scaling = scaling
    }
}

/// What one simulated service did.
public struct ServiceFigures: Hashable, Sendable, Codable {
    public var name: String
    public var scaling: String
    public var requests: Int
    /// Requests a replica took within the SLO (waiting at most `slo` seconds); one never taken is late.
    public var withinSLO: Int
    public var slo: Double
    public var p50Wait: Double
    public var p99Wait: Double
    public var maxWait: Double
    /// Replica-hours and their cost while the requests came (from the first request to the last one's end).
    public var replicaHours: Double
    public var gpuHours: Double
    public var costUSD: Double
    public var fewestReplicas: Int
    public var mostReplicas: Int
    /// Size changes (scaling events).
    public var resizes: Int
    /// Replicas started.
    public var starts: Int

    public var sloShare: Double { requests > 0 ? Double(withinSLO) / Double(requests) : 1 }

    enum CodingKeys: String, CodingKey {
        case name, scaling, requests, slo, resizes, starts
        case withinSLO = "within_slo"
        case p50Wait = "p50_wait_s"
        case p99Wait = "p99_wait_s"
        case maxWait = "max_wait_s"
        case replicaHours = "replica_hours"
        case gpuHours = "gpu_hours"
        case costUSD = "cost_usd"
        case fewestReplicas = "fewest_replicas"
        case mostReplicas = "most_replicas"
    }
}

/// Plays the services' requests and replicas for the simulator: requests wait in a queue per service until a
/// ready replica has a free slot; a replica is ready a cold start after it starts; its load (requests in
/// flight) is read every `sampleInterval`, as allotd scrapes it, and given to the controller.
final class ServiceDriver {
    struct Replica {
        var service: Int
        var run: Int
        var model: ServiceLoadFile.Replica
        var busy = 0
        var ready = false
        var leaving = false
    }

    struct Timed: Comparable {
        var time: Double
        var seq: Int
        var job: JobID
        var run: Int
        /// The service whose request ends, or -1: a replica becomes ready.
        var service: Int
        static func < (a: Timed, b: Timed) -> Bool { a.time != b.time ? a.time < b.time : a.seq < b.seq }
    }

    struct Served {
        var next = 0
        var queue = Deque<Int>()
        var waits: [Double] = []
        var withinSLO = 0
        var replicas: [JobID] = []
        var resizes = 0
        var starts = 0
        var fewest = Int.max
        var most = 0
    }

    let workload: ServiceWorkload
    var served: [Served]
    var replicas: [JobID: Replica] = [:]
    var timed = Heap<Timed>()
    var seq = 0
    /// Requests being served, all services together.
    var inFlight = 0
    var nextSample: Double
    /// When every request had been served (the services are deleted then), or nil.
    private(set) var finished: Double?

    /// - Parameter origin: when the services are created (the simulation's first instant); the requests
    ///   come from `origin + workload.start`.
    init(_ workload: ServiceWorkload, origin: Double) {
        var workload = workload
        workload.start += origin
        self.workload = workload
        served = workload.entries.map { _ in Served() }
        // The first pass starts the first replicas, so that they are ready when the requests come.
        nextSample = origin
    }

    /// The inputs that create the services, at time 0.
    func creation() -> [Controller.Input] {
        let scaling = workload.scaling
        return [
            .record(
                workload.entries.map { e in
                    let (spec, initial) = e.spec(scaling)
                    return .serviceCreated(spec: spec, replicas: initial)
                }
            )
        ]
    }

    /// The next instant something happens to a service.
    var nextTime: Double {
        guard finished == nil else { return .infinity }
        var t = timed.min?.time ?? .infinity
        for (i, e) in workload.entries.enumerated() where served[i].next < e.trace.requests.count {
            t = min(t, workload.start + e.trace.requests[served[i].next].time)
        }
        return min(t, nextSample)
    }

    /// A replica of a service started on `model`.
    func started(_ id: JobID, run: Int, service name: String, model: String, at t: Double) {
        guard let i = workload.entries.firstIndex(where: { $0.service.name == name }),
            let m = workload.entries[i].service.replica(on: model)
        else { return }
        replicas[id] = Replica(service: i, run: run, model: m)
        served[i].replicas.append(id)
        served[i].starts += 1
        seq += 1
        timed.insert(Timed(time: t + m.coldStart, seq: seq, job: id, run: run, service: -1))
    }

    /// A replica was told to stop: it takes no more requests and finishes those it has.
    func stopping(_ id: JobID) {
        replicas[id]?.leaving = true
        replicas[id]?.ready = false
    }

    /// A replica's run ended.
    func ended(_ id: JobID) {
        guard let r = replicas.removeValue(forKey: id) else { return }
        served[r.service].replicas.removeAll { $0 == id }
    }

    func resized(_ name: String) {
        if let i = workload.entries.firstIndex(where: { $0.service.name == name }) { served[i].resizes += 1 }
    }

    /// Notes each service's size while its requests come, for the fewest and most.
    func noteSizes(_ state: ClusterState, at t: Double) {
        guard t >= workload.start, finished == nil else { return }
        for (i, e) in workload.entries.enumerated() {
            let n = state.services[e.service.name]?.replicas ?? 0
            served[i].fewest = min(served[i].fewest, n)
            served[i].most = max(served[i].most, n)
        }
    }

    /// Plays what happens at `t` (one instant: request ends, replicas ready, arrivals, a load reading) and
    /// returns what the controller must hear, and whether a scheduling pass is due.
    func step(at t: Double) -> (inputs: [Controller.Input], pass: Bool) {
        var inputs: [Controller.Input] = []
        var pass = false
        while let top = timed.min, top.time <= t {
            _ = timed.popMin()
            if top.service < 0 {
                guard var r = replicas[top.job], r.run == top.run, !r.leaving else { continue }
                r.ready = true
                replicas[top.job] = r
                inputs.append(.replicaReady(top.job, true))
                dispatch(r.service, at: t)
            } else {
                inFlight -= 1
                if var r = replicas[top.job], r.run == top.run {
                    r.busy -= 1
                    replicas[top.job] = r
                }
                dispatch(top.service, at: t)
            }
        }
        for (i, e) in workload.entries.enumerated() {
            while served[i].next < e.trace.requests.count,
                workload.start + e.trace.requests[served[i].next].time <= t
            {
                served[i].queue.append(served[i].next)
                served[i].next += 1
            }
            dispatch(i, at: t)
        }
        if nextSample <= t && t < workload.start {
            // Before the requests come there is no load to read: the replicas only start.
            nextSample = workload.start
            inputs.append(.tick)
            pass = true
        } else if nextSample <= t {
            nextSample = t + workload.sampleInterval
            for (i, e) in workload.entries.enumerated() {
                let running = served[i].replicas.reduce(0) { $0 + (replicas[$1]?.busy ?? 0) }
                inputs.append(.serviceLoad(e.service.name, Double(running + served[i].queue.count)))
            }
            inputs.append(.tick)
            pass = true
        }
        let allIn = workload.entries.indices.allSatisfy { served[$0].next == workload.entries[$0].trace.requests.count }
        if allIn && finished == nil {
            let idle = served.allSatisfy { $0.queue.isEmpty } && inFlight == 0
            let lastArrival = workload.entries.map { workload.start + ($0.trace.requests.last?.time ?? 0) }.max() ?? t
            // A request nobody could ever serve is given up an hour after the last arrival.
            if idle || t >= lastArrival + 3600 {
                finished = t
                inputs += workload.entries.map { .deleteService($0.service.name, by: nil) }
                pass = true
            }
        }
        return (inputs, pass)
    }

    /// Hands waiting requests to the least busy ready replicas with a free slot.
    private func dispatch(_ i: Int, at t: Double) {
        let e = workload.entries[i]
        while let index = served[i].queue.first {
            var best: JobID?
            var bestBusy = Int.max
            for id in served[i].replicas {
                guard let r = replicas[id], r.ready, r.busy < r.model.concurrency, r.busy < bestBusy else { continue }
                best = id
                bestBusy = r.busy
            }
            guard let id = best, var r = replicas[id] else { return }
            served[i].queue.removeFirst()
            let request = e.trace.requests[index]
            let wait = t - (workload.start + request.time)
            served[i].waits.append(wait)
            if wait <= e.service.slo + 1e-9 { served[i].withinSLO += 1 }
            r.busy += 1
            replicas[id] = r
            inFlight += 1
            seq += 1
            timed.insert(
                Timed(
                    time: t + r.model.serviceTime(context: request.context, generated: request.generated),
                    seq: seq,
                    job: id,
                    run: r.run,
                    service: i
                )
            )
        }
    }

    /// The figures of each service, its replicas' runs counted from the first request to `finished`.
    func figures(_ runs: [RunRecord], _ state: ClusterState) -> [ServiceFigures] {
        let from = workload.start
        let to = finished ?? from
        return workload.entries.enumerated().map { i, e in
            var replicaSeconds = 0.0
            var gpuSeconds = 0.0
            var cost = 0.0
            for r in runs where state.jobs[r.job]?.spec.service == e.service.name {
                let d = max(0, min(r.end, to) - max(r.start, from))
                replicaSeconds += d
                gpuSeconds += d * r.allocation.gpuEquivalent
                cost += d * r.costPerSecond
            }
            // A request no replica took waited at least until the end.
            let untaken = (served[i].queue.map { $0 } + Array(served[i].next..<e.trace.requests.count)).map {
                max(0, to - (from + e.trace.requests[$0].time))
            }
            let waits = (served[i].waits + untaken).sorted()
            func quantile(_ q: Double) -> Double {
                guard !waits.isEmpty else { return 0 }
                return waits[min(waits.count - 1, max(0, Int((q * Double(waits.count)).rounded(.up)) - 1))]
            }
            return ServiceFigures(
                name: e.service.name,
                scaling: workload.scaling.rawValue,
                requests: e.trace.requests.count,
                withinSLO: served[i].withinSLO,
                slo: e.service.slo,
                p50Wait: quantile(0.5),
                p99Wait: quantile(0.99),
                maxWait: waits.last ?? 0,
                replicaHours: replicaSeconds / 3600,
                gpuHours: gpuSeconds / 3600,
                costUSD: cost,
                fewestReplicas: served[i].fewest == .max ? 0 : served[i].fewest,
                mostReplicas: served[i].most,
                resizes: served[i].resizes,
                starts: served[i].starts
            )
        }
    }
}
