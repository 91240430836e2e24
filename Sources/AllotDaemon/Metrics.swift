import AllotCore
import AllotProtocol
import AllotWAL
import CoreMetrics
import Foundation
import Logging
import Metrics
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import ServiceLifecycle
import Synchronization

/// allotd's metrics (swift-metrics, exported by swift-prometheus): made only when `metrics_listen` is set.
final class DaemonMetrics: Sendable {
    let registry: PrometheusCollectorRegistry
    let factory: PrometheusMetricsFactory

    let passSeconds: CoreMetrics.Timer
    let queueWait: CoreMetrics.Timer
    let walWrite: CoreMetrics.Timer
    let walSync: CoreMetrics.Timer
    let walBatchRecords: CoreMetrics.Recorder
    let submitted: CoreMetrics.Counter
    let jobsEnded: Mutex<[String: CoreMetrics.Counter]> = Mutex([:])
    let preemptions: Mutex<[String: CoreMetrics.Counter]> = Mutex([:])
    let reclaims: CoreMetrics.Counter
    /// Gauges refreshed at each scrape, by label set; those whose labels vanished are set to 0.
    private let gauges = Mutex<[String: CoreMetrics.Gauge]>([:])
    private let costCounters = Mutex<[String: (counter: CoreMetrics.FloatingPointCounter, last: Double)]>([:])

    init() {
        registry = PrometheusCollectorRegistry()
        var f = PrometheusMetricsFactory(registry: registry)
        let fast: [Duration] = [
            .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2),
            .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
            .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(5),
        ]
        f.durationHistogramBuckets = [
            "allot_schedule_pass_seconds": fast,
            "allot_wal_write_seconds": fast,
            "allot_wal_fsync_seconds": fast,
            "allot_queue_wait_seconds": [
                .milliseconds(10), .milliseconds(100), .seconds(1), .seconds(10), .seconds(60), .seconds(300),
                .seconds(900), .seconds(3600), .seconds(4 * 3600), .seconds(12 * 3600), .seconds(86400),
            ],
        ]
        f.valueHistogramBuckets = ["allot_wal_batch_records": [1, 2, 5, 10, 50, 100, 500, 1000, 5000, 10000]]
        factory = f
        passSeconds = CoreMetrics.Timer(label: "allot_schedule_pass_seconds", factory: f)
        queueWait = CoreMetrics.Timer(label: "allot_queue_wait_seconds", factory: f)
        walWrite = CoreMetrics.Timer(label: "allot_wal_write_seconds", factory: f)
        walSync = CoreMetrics.Timer(label: "allot_wal_fsync_seconds", factory: f)
        walBatchRecords = CoreMetrics.Recorder(label: "allot_wal_batch_records", aggregate: true, factory: f)
        submitted = CoreMetrics.Counter(label: "allot_jobs_submitted_total", factory: f)
        reclaims = CoreMetrics.Counter(label: "allot_reclaims_total", factory: f)
        // Every series exists from the start (at 0), so that rates and alerts see them before the first one.
        preemptions.withLock { map in
            for r in PreemptionReason.allCases {
                map[r.rawValue] = CoreMetrics.Counter(
                    label: "allot_preemptions_total",
                    dimensions: [("reason", r.rawValue)],
                    factory: f
                )
            }
        }
        jobsEnded.withLock { map in
            for s in JobState.allCases where s.isTerminal {
                map[s.rawValue] = CoreMetrics.Counter(
                    label: "allot_jobs_ended_total",
                    dimensions: [("state", s.rawValue)],
                    factory: f
                )
            }
        }
    }

    func preempted(reason: PreemptionReason) {
        let c = preemptions.withLock { map in
            if let c = map[reason.rawValue] { return c }
            let c = CoreMetrics.Counter(
                label: "allot_preemptions_total",
                dimensions: [("reason", reason.rawValue)],
                factory: factory
            )
            map[reason.rawValue] = c
            return c
        }
        c.increment()
        if reason.isReclaim { reclaims.increment() }
    }

    func ended(as state: JobState) {
        let c = jobsEnded.withLock { map in
            if let c = map[state.rawValue] { return c }
            let c = CoreMetrics.Counter(
                label: "allot_jobs_ended_total",
                dimensions: [("state", state.rawValue)],
                factory: factory
            )
            map[state.rawValue] = c
            return c
        }
        c.increment()
    }

    /// Sets a family of gauges to these values (one per label set); label sets seen before and missing now
    /// go to 0.
    func setGauges(_ name: String, _ values: [(labels: [(String, String)], value: Double)]) {
        gauges.withLock { all in
            var seen = Set<String>()
            for (labels, value) in values {
                let key = name + "|" + labels.map { "\($0.0)=\($0.1)" }.joined(separator: ",")
                seen.insert(key)
                let g = all[key] ?? CoreMetrics.Gauge(label: name, dimensions: labels, factory: factory)
                all[key] = g
                g.record(value)
            }
            for (key, g) in all where key.hasPrefix(name + "|") && !seen.contains(key) { g.record(0) }
        }
    }

    /// Money accrued by tenant: a counter moved by what was spent since the last scrape.
    func setCost(_ byTenant: [String: Double]) {
        costCounters.withLock { all in
            for (tenant, total) in byTenant {
                var entry =
                    all[tenant]
                    ?? (
                        CoreMetrics.FloatingPointCounter(
                            label: "allot_cost_usd_total",
                            dimensions: [("tenant", tenant)],
                            factory: factory
                        ),
                        0
                    )
                if total > entry.last {
                    entry.counter.increment(by: total - entry.last)
                    entry.last = total
                }
                all[tenant] = entry
            }
        }
    }
}

extension Engine {
    /// Brings the scrape-time gauges up to date: GPUs by model and state, jobs by state, kind and class,
    /// money accrued by tenant.
    func refreshMetrics() {
        guard let m = metrics else { return }
        var gpus: [(labels: [(String, String)], value: Double)] = []
        for (model, c) in gpuCounts() {
            for (state, n) in [
                ("used", c.used), ("free", c.free), ("lent", c.lent), ("unhealthy", c.unhealthy), ("total", c.total),
            ] {
                gpus.append(([("model", model), ("state", state)], Double(n)))
            }
        }
        m.setGauges("allot_gpus", gpus)
        struct Key: Hashable {
            var state: String
            var kind: String
            var priorityClass: String
        }
        var counts: [Key: Int] = [:]
        for job in state.jobs {
            let key = Key(
                state: job.state.rawValue,
                kind: job.spec.kind.rawValue,
                priorityClass: state.priorityClass(of: job.spec).name
            )
            counts[key, default: 0] += 1
        }
        m.setGauges(
            "allot_jobs",
            counts.map {
                ([("state", $0.key.state), ("kind", $0.key.kind), ("class", $0.key.priorityClass)], Double($0.value))
            }
        )
        if case .success(let report) = costTotals(CostParams(by: "tenant")) {
            m.setCost(report.rows.mapValues(\.usd))
        }
        m.setGauges("allot_wal_last_lsn", [([], Double(wal.lastLSN))])
        var nodes: [String: Int] = [:]
        for node in state.nodes { nodes[node.state.rawValue, default: 0] += 1 }
        m.setGauges(
            "allot_nodes",
            NodeState.allCases.map { ([("state", $0.rawValue)], Double(nodes[$0.rawValue] ?? 0)) }
        )
        let up = agents.values.filter { $0.link != nil }.count
        m.setGauges("allot_agents", [([("link", "up")], Double(up)), ([("link", "down")], Double(agents.count - up))])
        // Budgets: the limit, what is spent in the window, and the seconds left of it (for "burn ahead of
        // plan": spent + rate × seconds left > budget).
        let now = Instant(seconds: Self.now)
        var budget: [(labels: [(String, String)], value: Double)] = []
        var spent: [(labels: [(String, String)], value: Double)] = []
        var left: [(labels: [(String, String)], value: Double)] = []
        for t in state.config.tenants {
            guard let b = t.budget else { continue }
            let labels = [("tenant", t.name), ("window", b.window.rawValue)]
            budget.append((labels, b.usd))
            spent.append((labels, state.spent(by: t.name, in: b.window, at: now)))
            left.append((labels, b.window.end(containing: now) - now))
        }
        m.setGauges("allot_tenant_budget_usd", budget)
        m.setGauges("allot_tenant_spent_usd", spent)
        m.setGauges("allot_tenant_budget_window_remaining_seconds", left)
        m.setGauges("allot_start_time_seconds", [([], startedAt)])
    }
}

/// Serves `GET /metrics` (Prometheus text format) on `metrics_listen`.
struct MetricsServer: Service, CustomStringConvertible {
    let host: String
    let port: Int
    let metrics: DaemonMetrics
    let engine: EngineHandle
    let logger: Logger

    var description: String { "MetricsServer(\(host):\(port))" }

    func run() async throws {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(
                        wrappingChannelSynchronously: channel
                    )
                }
            }
        logger.info("Metrics listening", metadata: ["metrics.listen": "\(host):\(port)"])
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask {
                try? await gracefulShutdown()
                server.channel.close(promise: nil)
            }
            try await server.executeThenClose { inbound in
                for try await connection in inbound {
                    group.addTask { await serve(connection) }
                }
            }
        }
    }

    func serve(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>) async {
        try? await connection.executeThenClose { inbound, outbound in
            var head: HTTPRequestHead?
            for try await part in inbound {
                switch part {
                case .head(let h): head = h
                case .body: break
                case .end:
                    guard let h = head else { continue }
                    let (status, body, type): (HTTPResponseStatus, String, String)
                    if h.method == .GET && (h.uri == "/metrics" || h.uri.hasPrefix("/metrics?")) {
                        await withCheckedContinuation { engine.send(.refreshMetrics($0)) }
                        (status, body, type) = (.ok, metrics.registry.emitToString(), "text/plain; version=0.0.4")
                    } else {
                        (status, body, type) = (.notFound, "allotd serves GET /metrics only\n", "text/plain")
                    }
                    var headers = HTTPHeaders()
                    headers.add(name: "Content-Type", value: type)
                    headers.add(name: "Content-Length", value: String(body.utf8.count))
                    if !h.isKeepAlive { headers.add(name: "Connection", value: "close") }
                    try await outbound.write(
                        .head(HTTPResponseHead(version: h.version, status: status, headers: headers))
                    )
                    try await outbound.write(.body(.byteBuffer(ByteBuffer(string: body))))
                    try await outbound.write(.end(nil))
                    if !h.isKeepAlive { return }
                    head = nil
                }
            }
        }
    }
}

/// `host:port` as the config and the command line give it: `[cluster] listen`, `metrics_listen`,
/// `allotd agent --controller`.
enum HostPort {
    /// Parses `host:port` (`[::1]:9464` for IPv6).
    static func parse(_ text: String) -> (host: String, port: Int)? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (1...65535).contains(port)
        else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return host.isEmpty ? nil : (host, port)
    }
}
