import AllotConfig
import AllotCore
import AllotProtocol
import AllotWAL
import Foundation
import Logging

extension Engine {
    /// `status`: GPUs by model, jobs by state, the queue by kind and class, today's spend, the log.
    func status() -> StatusResult {
        let gpus = gpuCounts()
        var jobs: [String: Int] = [:]
        var queue: [String: [String: Int]] = [:]
        for job in state.jobs {
            jobs[job.state.rawValue, default: 0] += 1
            if job.state == .pending {
                queue[job.spec.kind.rawValue, default: [:]][state.priorityClass(of: job.spec).name, default: 0] += 1
            }
        }
        var nodes: [String: Int] = [:]
        for node in state.nodes { nodes[node.state.rawValue, default: 0] += 1 }
        let now = Instant(seconds: Self.now)
        let today = state.tenantUsage.values.reduce(0) { $0 + $1.spent(in: .day, at: now) }
        return StatusResult(
            gpus: gpus,
            jobs: jobs,
            queue: queue,
            spendTodayUSD: today,
            log: LogStatus(
                lastLSN: following?.lsn ?? wal.lastLSN,
                durableLSN: following?.lsn ?? durableLSN,
                failed: failure?.message,
                role: config.ha == nil ? nil : following == nil ? "leader" : "follower",
                leader: following == nil ? config.ha.map(HA.name) : following?.leader
            ),
            nodes: nodes
        )
    }

    private struct NodeGPUName: Hashable {
        var node: String
        var gpu: Int
    }

    /// GPUs by model: total, used, free, lent, unhealthy.
    func gpuCounts() -> [String: GPUCounts] {
        var gpus: [String: GPUCounts] = [:]
        for node in state.nodes {
            var c = gpus[node.spec.gpuModel] ?? GPUCounts(total: 0, used: 0, free: 0, lent: 0, unhealthy: 0)
            c.total += node.spec.gpus
            c.used += node.gpusInUse
            c.free += node.schedulable ? node.freeMask.nonzeroBitCount : 0
            c.unhealthy += (0..<node.spec.gpus).filter { node.health[$0] != .healthy }.count
            gpus[node.spec.gpuModel] = c
        }
        // A GPU is lent once, however many shares of it are on loan.
        var sharedLent: Set<NodeGPUName> = []
        for id in state.activeJobs {
            guard let job = state.jobs[id], !job.loans.isEmpty, let a = job.allocation else { continue }
            if a.share == nil && a.mig == nil {
                gpus[a.model]?.lent += a.gpuCount
                continue
            }
            for slice in a.slices {
                for g in slice.gpus where sharedLent.insert(NodeGPUName(node: slice.node, gpu: g)).inserted {
                    gpus[a.model]?.lent += 1
                }
            }
        }
        return gpus
    }

    /// `cost`: GPU-hours and money by tenant, model, kind or job, over a window. A job's current run is
    /// counted exactly; runs before it (a job preempted and started again) are spread evenly between its
    /// first start and the start of its current run, or its end.
    func cost(_ p: CostParams) -> Result<CostResult, RPCError> {
        costTotals(p).map { by, rows in
            // Full precision: clients round for display (a short job's cost is not zero).
            let out = rows.map {
                CostRow(
                    key: $0.key,
                    name: by == "job"
                        ? ($0.key == "archived"
                            ? "jobs archived after job_retention"
                            : UInt64($0.key).flatMap { state.jobs[JobID($0)]?.spec.name }) : nil,
                    gpuHours: $0.value.hours,
                    costUSD: $0.value.usd
                )
            }
            .sorted { $0.costUSD != $1.costUSD ? $0.costUSD > $1.costUSD : $0.key < $1.key }
            return CostResult(by: by, rows: out)
        }
    }

    /// The row of jobs that are no service's replicas, in a cost by service.
    static let noService = "(no service)"

    /// GPU-hours and dollars by key.
    func costTotals(_ p: CostParams) -> Result<(by: String, rows: [String: (hours: Double, usd: Double)]), RPCError> {
        let by = p.by ?? "tenant"
        guard ["tenant", "model", "kind", "job", "user", "service"].contains(by) else {
            return .failure(.invalidParams("by: expected tenant, model, kind, user, service or job, got \"\(by)\""))
        }
        var since = -Double.infinity
        var until = Double.infinity
        if let s = p.since {
            guard let t = WireTime.parse(s) else {
                return .failure(.invalidParams("since: \"\(s)\" is not a time (RFC 3339, e.g. 2026-11-01T00:00:00Z)"))
            }
            since = t
        }
        if let u = p.until {
            guard let t = WireTime.parse(u) else {
                return .failure(.invalidParams("until: \"\(u)\" is not a time (RFC 3339, e.g. 2026-11-30T00:00:00Z)"))
            }
            until = t
        }
        guard since < until else { return .failure(.invalidParams("since must be before until")) }
        let now = Self.now
        func overlap(_ a: Double, _ b: Double) -> Double {
            guard b > a else { return 0 }
            return max(0, min(b, until) - max(a, since)) / (b - a)
        }
        var rows: [String: (hours: Double, usd: Double)] = [:]
        for job in state.jobs where job.firstStartTime != nil {
            var gpuSeconds = 0.0
            var usd = 0.0
            let running = job.state.holdsGPUs
            if running, let start = job.startTime?.seconds {
                let span = max(0, now - start)
                let f = span > 0 ? overlap(start, now) : (start >= since && start < until ? 1 : 0)
                gpuSeconds += span * (job.allocation?.gpuEquivalent ?? 0) * f
                usd += span * job.costRate * f
            }
            if job.pastCostUSD > 0 || job.pastGPUSeconds > 0, let first = job.firstStartTime?.seconds {
                let last = running ? (job.startTime?.seconds ?? now) : min(job.endTime?.seconds ?? now, now)
                let f = last > first ? overlap(first, last) : (first >= since && first < until ? 1 : 0)
                gpuSeconds += job.pastGPUSeconds * f
                usd += job.pastCostUSD * f
            }
            guard gpuSeconds > 0 || usd > 0 else { continue }
            let key: String
            switch by {
            case "model": key = job.allocation?.model ?? job.placement?.model ?? "unknown"
            case "kind": key = job.spec.kind.rawValue
            case "job": key = job.id.description
            case "user": key = job.spec.user ?? String(job.spec.uid)
            case "service": key = job.spec.service ?? Self.noService
            default: key = job.spec.tenant
            }
            rows[key, default: (0, 0)].hours += gpuSeconds / 3600
            rows[key, default: (0, 0)].usd += usd
        }
        // Archived jobs: their use by the day they ended (spread over that day for a window's edges).
        for (k, t) in state.archived.rows {
            let start = Double(k.day) * 86_400
            let f = overlap(start, start + 86_400)
            guard f > 0 else { continue }
            let key: String
            switch by {
            case "model": key = k.model
            case "kind": key = k.kind
            case "job": key = "archived"
            case "user": key = k.user
            case "service": key = k.service ?? Self.noService
            default: key = k.tenant
            }
            rows[key, default: (0, 0)].hours += t.gpuSeconds / 3600 * f
            rows[key, default: (0, 0)].usd += t.usd * f
        }
        return .success((by, rows))
    }
}
