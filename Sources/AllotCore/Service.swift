/// How a replica of a service is checked by its node's runner.
public struct Probe: Hashable, Sendable, Codable, CustomStringConvertible {
    public enum Kind: String, Hashable, Sendable, Codable, CaseIterable {
        /// An HTTP GET of `target` (a path) on the replica's port; a 2xx or 3xx answer passes.
        case http
        /// A TCP connection to the replica's port.
        case tcp
        /// `target` run by `sh -c` as the replica's owner; exit 0 passes.
        case exec
    }

    public var kind: Kind
    public var target: String

    public init(kind: Kind, target: String = "") {
        self.kind = kind
        self.target = target
    }

    /// `http:/health`, `http` (for `/`), `tcp`, `exec:CMD`.
    public static func parse(_ text: String) -> Result<Probe, SpecError> {
        let (head, rest): (Substring, String?) =
            if let colon = text.firstIndex(of: ":") {
                (text[..<colon], String(text[text.index(after: colon)...]))
            } else {
                (Substring(text), nil)
            }
        switch head {
        case "http":
            let path = rest ?? "/"
            guard path.hasPrefix("/"), !path.contains(where: { $0.isWhitespace || $0.isNewline }) else {
                return .failure(SpecError("\"\(text)\": an HTTP check takes a path starting with /, as http:/health"))
            }
            return .success(Probe(kind: .http, target: path))
        case "tcp":
            guard rest == nil || rest == "" else {
                return .failure(SpecError("\"\(text)\": a TCP check takes nothing after tcp (it connects to the port)"))
            }
            return .success(Probe(kind: .tcp))
        case "exec":
            guard let command = rest, !command.allSatisfy(\.isWhitespace) else {
                return .failure(SpecError("\"\(text)\": an exec check takes a command, as exec:CMD"))
            }
            return .success(Probe(kind: .exec, target: command))
        default:
            return .failure(SpecError("\"\(text)\" is not a check: http[:/PATH], tcp or exec:CMD"))
        }
    }

    public var description: String {
        switch kind {
        case .http: "http:\(target)"
        case .tcp: "tcp"
        case .exec: "exec:\(target)"
        }
    }
}

/// How a service follows its load: the requests in flight it aims at per replica, averaged over a stable
/// window, with a short panic window for bursts (Knative's autoscaler, whose defaults these are). Or, with
/// `slots`, sized for a share of requests that may wait: each replica serves `slots` requests at once and the
/// replicas are the fewest whose slots keep the chance a request waits under `waiting` (Erlang's C formula
/// on the load in flight): more headroom at a small load, less at a big one, where a fixed target wastes it.
public struct Autoscale: Hashable, Sendable, Codable, CustomStringConvertible {
    /// Requests in flight (running and waiting) per replica it aims at.
    public var target: Double
    /// The load is averaged over this long to decide.
    public var window: Seconds = 60
    /// Over this short a time, a load of twice what the replicas are sized for scales up at once (and
    /// nothing scales down for a window after).
    public var panicWindow: Seconds = 6
    /// A smaller size is taken only once it has been enough for this long.
    public var downDelay: Seconds = 0
    /// With min 0: no replica after no load for this long; nil: never to zero.
    public var zeroAfter: Seconds?
    /// Where each replica's Prometheus metrics are read (a path on its port); nil: only the demand pushed
    /// through the protocol (`service.demand`) counts.
    public var metricsPath: String?
    /// The series that add up to a replica's requests in flight.
    public var metrics: [String] = Self.vllmMetrics
    /// Requests one replica serves at once (its batch, e.g. vLLM's `--max-num-seqs`); nil: size by `target`.
    public var slots: Int?
    /// With `slots`: the share of requests that may have to wait for a slot (0.01: one in a hundred).
    public var waiting: Double = 0.01

    public static let vllmMetrics = ["vllm:num_requests_running", "vllm:num_requests_waiting"]

    public init(target: Double) { self.target = target }

    /// Sized by slots: each replica serves `slots` requests at once; at most `waiting` of them wait.
    public init(slots: Int, waiting: Double = 0.01) {
        self.target = Double(slots)
        self.slots = slots
        self.waiting = waiting
    }

    /// How it sizes, in words: `target 4 per replica`, or `8 slots per replica, at most 1% waiting`.
    public var sizing: String {
        guard let slots else { return "target \(Self.number(target)) per replica" }
        return "\(slots) slots per replica, at most \(Self.number(waiting * 100))% waiting"
    }

    /// The replicas a load of `inFlight` requests needs (at least 0; the caller applies min and max).
    public func replicas(for inFlight: Double) -> Int {
        guard inFlight > 0 else { return 0 }
        guard let slots, slots > 0 else { return Int((inFlight / target).rounded(.up)) }
        return Self.erlangReplicas(load: inFlight, slots: slots, waiting: waiting, most: ServiceSpec.maxReplicasLimit)
    }

    /// The fewest replicas of `slots` servers each for which an offered load of `load` (erlangs) waits with
    /// probability at most `waiting` (Erlang C), up to `most`.
    static func erlangReplicas(load a: Double, slots: Int, waiting: Double, most: Int) -> Int {
        // Erlang B by its recurrence, one server at a time; C from B.
        var b = 1.0
        var servers = 0
        var n = max(1, Int((a / Double(slots)).rounded(.down)))
        while n < most {
            while servers < n * slots {
                servers += 1
                b = a * b / (Double(servers) + a * b)
            }
            let c = Double(servers)
            if c > a {
                let pWait = c * b / (c - a * (1 - b))
                if pWait <= waiting { return n }
            }
            n += 1
        }
        return most
    }

    /// `target=4,window=60s,panic-window=6s,down-delay=5m,zero-after=10m,metrics=/metrics,series=a+b`, or a
    /// bare number for the target.
    public static func parse(_ text: String) -> Result<Autoscale, SpecError> {
        var a = Autoscale(target: 0)
        var sawTarget = false
        var sawSlots = false
        var sawWaiting = false
        for part in text.split(separator: ",").map({ String($0.filter { $0 != " " }) }) {
            let kv = part.split(separator: "=", maxSplits: 1).map(String.init)
            let (key, value) = kv.count == 2 ? (kv[0], kv[1]) : ("target", kv[0])
            func duration() -> Result<Seconds, SpecError> {
                guard let d = DurationText.parse(value), d >= 0 else {
                    return .failure(SpecError("\(key)=\(value): not a duration (e.g. 60s, 5m)"))
                }
                return .success(d)
            }
            switch key {
            case "target":
                guard let t = Double(value), t > 0, t.isFinite else {
                    return .failure(SpecError("target=\(value): requests in flight per replica, above 0"))
                }
                a.target = t
                sawTarget = true
            case "window":
                switch duration() {
                case .success(let d): a.window = d
                case .failure(let e): return .failure(e)
                }
            case "panic-window":
                switch duration() {
                case .success(let d): a.panicWindow = d
                case .failure(let e): return .failure(e)
                }
            case "down-delay":
                switch duration() {
                case .success(let d): a.downDelay = d
                case .failure(let e): return .failure(e)
                }
            case "zero-after":
                switch duration() {
                case .success(let d): a.zeroAfter = d
                case .failure(let e): return .failure(e)
                }
            case "slots":
                guard let n = Int(value), n > 0, n <= 100_000 else {
                    return .failure(SpecError("slots=\(value): requests one replica serves at once, 1 or more"))
                }
                a.slots = n
                a.target = Double(n)
                sawSlots = true
            case "waiting":
                let number = value.hasSuffix("%") ? Double(value.dropLast()).map { $0 / 100 } : Double(value)
                guard let w = number, w > 0, w < 1 else {
                    return .failure(
                        SpecError(
                            "waiting=\(value): the share of requests that may wait, as 1% or 0.01 (above 0, below 1)"
                        )
                    )
                }
                a.waiting = w
                sawWaiting = true
            case "metrics":
                guard value.hasPrefix("/"), !value.contains(where: \.isWhitespace) else {
                    return .failure(SpecError("metrics=\(value): the path of each replica's metrics, as /metrics"))
                }
                a.metricsPath = value
            case "series":
                let names = value.split(separator: "+").map(String.init)
                guard !names.isEmpty, names.allSatisfy({ !$0.isEmpty && !$0.contains(where: \.isWhitespace) }) else {
                    return .failure(SpecError("series=\(value): metric names joined by +"))
                }
                a.metrics = names
            default:
                return .failure(
                    SpecError(
                        "\"\(key)\" is not an autoscale setting: target, slots, waiting, window, panic-window, down-delay, zero-after, metrics, series"
                    )
                )
            }
        }
        if sawTarget && sawSlots {
            return .failure(
                SpecError("\"\(text)\": give target=N (requests in flight per replica) or slots=N, not both")
            )
        }
        if sawWaiting && !sawSlots {
            return .failure(SpecError("\"\(text)\": waiting=P sizes by slots; give slots=N with it"))
        }
        guard sawTarget || sawSlots else {
            return .failure(
                SpecError(
                    "\"\(text)\": give target=N (requests in flight per replica) or slots=N (requests a replica serves at once)"
                )
            )
        }
        guard a.panicWindow > 0, a.window >= a.panicWindow else {
            return .failure(
                SpecError(
                    "the window (\(a.window)s) must be at least the panic window (\(a.panicWindow)s), which is above 0"
                )
            )
        }
        return .success(a)
    }

    public var description: String {
        var parts =
            slots.map { ["slots=\($0)", "waiting=\(Self.number(waiting * 100))%"] } ?? ["target=\(Self.number(target))"]
        parts.append("window=\(DurationText.format(window))")
        parts.append("panic-window=\(DurationText.format(panicWindow))")
        if downDelay > 0 { parts.append("down-delay=\(DurationText.format(downDelay))") }
        if let z = zeroAfter { parts.append("zero-after=\(DurationText.format(z))") }
        if let m = metricsPath { parts.append("metrics=\(m)") }
        if metrics != Self.vllmMetrics { parts.append("series=\(metrics.joined(separator: "+"))") }
        return parts.joined(separator: ",")
    }

    static func number(_ v: Double) -> String { v == v.rounded() ? String(Int(v)) : String(v) }
}

/// What a service is: the job each replica runs, how many may run, and how replicas are reached and checked.
public struct ServiceSpec: Hashable, Sendable, Codable {
    public var name: String
    /// Each replica's job (an inference job of the service's owner and tenant).
    public var template: JobSpec
    public var minReplicas: Int
    public var maxReplicas: Int
    /// The port every replica listens on; nil: a free port picked on the replica's node at each start.
    public var port: Int?
    /// Passed before a replica counts as serving (nil: serving once it runs).
    public var ready: Probe?
    /// Checked while it serves; a replica that fails it three times in a row is restarted.
    public var live: Probe?
    /// How it follows its load; nil: it keeps the replicas it is given.
    public var autoscale: Autoscale?

    public init(
        name: String,
        template: JobSpec,
        minReplicas: Int,
        maxReplicas: Int,
        port: Int? = nil,
        ready: Probe? = nil,
        live: Probe? = nil,
        autoscale: Autoscale? = nil
    ) {
        self.name = name
        self.template = template
        self.minReplicas = minReplicas
        self.maxReplicas = maxReplicas
        self.port = port
        self.ready = ready
        self.live = live
        self.autoscale = autoscale
    }

    /// The most replicas one service may have.
    public static let maxReplicasLimit = 10_000

    /// Problems with the spec on its own; empty when it is valid.
    public func problems() -> [String] {
        var out: [String] = []
        if let p = Self.nameProblem(name) { out.append(p) }
        if minReplicas < 0 { out.append("a service needs 0 replicas or more, not \(minReplicas)") }
        if maxReplicas < max(1, minReplicas) {
            out.append("the most replicas (\(maxReplicas)) must be at least 1 and at least the fewest (\(minReplicas))")
        }
        if maxReplicas > Self.maxReplicasLimit {
            out.append("a service may have at most \(Self.maxReplicasLimit) replicas, not \(maxReplicas)")
        }
        if let p = port, !(1...65_535).contains(p) { out.append("port must be 1...65535 or auto, not \(p)") }
        if template.interactive != nil { out.append("a service's replicas cannot be interactive") }
        if template.array != nil { out.append("a service's replicas are not a job array") }
        if !template.dependencies.isEmpty { out.append("a service's replicas take no dependencies") }
        if template.command.isEmpty { out.append("a service needs a command") }
        out += ClusterState.specProblems(template)
        return out
    }

    /// Why `name` cannot name a service, or nil: letters, digits, `-`, `_` and `.`, 1–63 characters,
    /// starting with a letter or digit (it appears in paths, metrics labels and DNS-like names).
    public static func nameProblem(_ name: String) -> String? {
        let ok =
            !name.isEmpty && name.count <= 63
            && name.unicodeScalars.allSatisfy {
                ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0)))
                    || "-_.".unicodeScalars.contains($0)
            }
            && name.unicodeScalars.first.map { $0.properties.isAlphabetic || ("0"..."9").contains($0) } == true
        return ok
            ? nil
            : "\"\(name)\" cannot name a service: 1 to 63 letters, digits, -, _ or ., starting with a letter or digit"
    }
}

/// A service in the pool: its spec, how many replicas it wants, and its replicas' jobs.
public struct InferenceService: Hashable, Sendable, Codable {
    public var spec: ServiceSpec
    /// How many replicas it should have now.
    public internal(set) var replicas: Int
    public internal(set) var created: Instant
    /// Why it has that many (`created`, `scaled by uid 0`, …).
    public internal(set) var scaleReason: String
    /// Its replicas' jobs that have not ended, ascending.
    public internal(set) var members: [JobID] = []
    /// Replicas that ended on their own in a row, each soon after it started: a crash loop.
    public internal(set) var crashes = 0
    /// No replacement starts before this (the crash loop's back-off).
    public internal(set) var restartAfter: Instant?
    /// How the last replica that ended on its own ended.
    public internal(set) var lastCrash: String?
    /// Its spec's version: 1 when created, one more at each update.
    public internal(set) var generation = 1
    /// Why the rollout of its newest version stopped, while replicas of an older one still serve.
    public internal(set) var rolloutHalted: String?

    public init(
        spec: ServiceSpec,
        replicas: Int,
        created: Instant,
        scaleReason: String,
        members: [JobID] = [],
        crashes: Int = 0,
        restartAfter: Instant? = nil,
        lastCrash: String? = nil,
        generation: Int = 1,
        rolloutHalted: String? = nil
    ) {
        self.spec = spec
        self.replicas = replicas
        self.created = created
        self.scaleReason = scaleReason
        self.members = members
        self.crashes = crashes
        self.restartAfter = restartAfter
        self.lastCrash = lastCrash
        self.generation = generation
        self.rolloutHalted = rolloutHalted
    }

    /// A replica's job spec of the service's current version.
    public var replicaSpec: JobSpec {
        var job = spec.template
        job.service = spec.name
        return job
    }

    /// A replica in a rollout that has not become ready in this long stops the rollout.
    public static let progressDeadline: Seconds = 600
    /// Crashes in a row during a rollout that stop it.
    public static let crashesThatHaltARollout = 3

    /// A replica that ran at least this long before it ended starts the crash count afresh.
    public static let healthyRun: Seconds = 600
    /// The back-off after `crashes` crashes in a row: 1 s, doubling, at most 5 min (as Kubernetes' crash
    /// loop back-off, from a shorter start: a model server that dies at once is seen dying at once).
    public static func backoff(crashes: Int) -> Seconds {
        crashes <= 0 ? 0 : min(300, Double(1 << min(crashes - 1, 16)))
    }
}

/// Why a spec or value is not valid, in a sentence.
public struct SpecError: Error, Hashable, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
}

extension ClusterState {
    /// Services by name.
    public func service(named name: String) -> InferenceService? { services[name] }

    mutating func applyService(_ body: Event.Body, at t: Instant) throws(StateError) {
        switch body {
        case .serviceCreated(let spec, let replicas):
            if let problem = spec.problems().first {
                throw StateError(.invalidSpec, "service \(spec.name): \(problem)")
            }
            guard services[spec.name] == nil else {
                throw StateError(.duplicate, "service \(spec.name) already exists")
            }
            guard (spec.minReplicas...spec.maxReplicas).contains(replicas) else {
                throw StateError(
                    .invalidSpec,
                    "service \(spec.name): \(replicas) replicas is outside \(spec.minReplicas)...\(spec.maxReplicas)"
                )
            }
            services[spec.name] = InferenceService(spec: spec, replicas: replicas, created: t, scaleReason: "created")
        case .serviceScaled(let name, let replicas, let minReplicas, let maxReplicas, let reason):
            guard var s = services[name] else { throw StateError(.unknownJob, "no service \(name)") }
            guard minReplicas >= 0, maxReplicas >= max(1, minReplicas), maxReplicas <= ServiceSpec.maxReplicasLimit,
                (minReplicas...maxReplicas).contains(replicas)
            else {
                throw StateError(
                    .invalidSpec,
                    "service \(name): \(replicas) replicas within \(minReplicas)...\(maxReplicas) is not a valid size"
                )
            }
            s.replicas = replicas
            s.spec.minReplicas = minReplicas
            s.spec.maxReplicas = maxReplicas
            s.scaleReason = reason
            // Asked for again: a new start, not a continued crash loop.
            if replicas > s.members.count { s.restartAfter = nil }
            services[name] = s
        case .serviceUpdated(let spec, let replicas, _):
            guard var s = services[spec.name] else { throw StateError(.unknownJob, "no service \(spec.name)") }
            if let problem = spec.problems().first {
                throw StateError(.invalidSpec, "service \(spec.name): \(problem)")
            }
            guard (spec.minReplicas...spec.maxReplicas).contains(replicas) else {
                throw StateError(
                    .invalidSpec,
                    "service \(spec.name): \(replicas) replicas is outside \(spec.minReplicas)...\(spec.maxReplicas)"
                )
            }
            let rolls = spec.template != s.spec.template
            s.spec = spec
            s.replicas = replicas
            if rolls {
                s.generation += 1
                s.rolloutHalted = nil
                s.crashes = 0
                s.restartAfter = nil
            }
            services[spec.name] = s
        case .serviceRolloutHalted(let name, let reason):
            guard var s = services[name] else { throw StateError(.unknownJob, "no service \(name)") }
            s.rolloutHalted = reason
            services[name] = s
        case .serviceDeleted(let name, _):
            guard services.removeValue(forKey: name) != nil else { throw StateError(.unknownJob, "no service \(name)") }
        default:
            break
        }
    }

    /// Keeps a service's replica list as its replicas' jobs arrive and end; counts crashes.
    mutating func noteReplica(_ id: JobID, at t: Instant) {
        guard let job = jobs[id], let name = job.spec.service, var s = services[name] else { return }
        if job.state.isTerminal {
            guard let i = s.members.firstIndex(of: id) else { return }
            s.members.remove(at: i)
            if job.state == .failed || job.state == .completed {
                // It ended on its own: a service's replica is meant to run until told to stop.
                let ran = max(0, (job.endTime ?? t) - (job.startTime ?? t))
                s.crashes = ran >= InferenceService.healthyRun ? 1 : s.crashes + 1
                s.restartAfter = t + InferenceService.backoff(crashes: s.crashes)
                let how = job.exit.map { "\($0)" } ?? job.note ?? job.state.rawValue
                s.lastCrash = "replica \(id) ended (\(how)) after \(Int(ran.rounded()))s"
            }
        } else if !s.members.contains(id) {
            s.members.append(id)
            s.members.sort()
        }
        services[name] = s
    }
}
