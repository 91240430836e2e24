import AllotCore
import Foundation

/// `allotctl simulate --report`: a self-contained page (HTML with inline SVG, or one SVG) of one or more
/// simulation runs on the same trace: the GPUs over time as a Gantt chart coloured by tenant and kind, GPUs
/// busy, lent and idle, the queue's length and waits, the cost per tenant, and the policies side by side.
///
/// Everything is aggregated into at most ``bins`` time slices and ``maxRows`` GPU rows, so the page stays a
/// few megabytes and quick to draw with 1,000 GPUs and 80,000 jobs: a cell is coloured by the tenant and
/// kind that used it most, its strength by how busy it was, and equal neighbours are drawn as one box.
public enum SimulationReport {
    public static let bins = 480
    public static let maxRows = 240
    /// Tenants with a colour of their own (the rest are "other").
    static let maxTenants = 10
    static let palette = [
        "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#bcbd22", "#7f7f7f",
    ]
    static let otherColour = "#444444"
    static let policyColours = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd"]

    /// The page. `svg`: one SVG document instead of HTML.
    public static func render(_ results: [SimulationResult], title: String, svg: Bool) -> String {
        let frame = Frame(results)
        var charts: [(title: String, height: Int, body: String)] = []
        let names = results.map(\.policy.rawValue)
        if results.count > 1 {
            charts.append(
                plot(
                    "GPUs busy, by policy",
                    frame,
                    results.enumerated().map { i, r in (names[i], policyColours[i % 5], frame.busy(r).total) },
                    unit: "GPUs"
                )
            )
            charts.append(
                plot(
                    "Jobs waiting, by policy",
                    frame,
                    results.enumerated().map { i, r in (names[i], policyColours[i % 5], frame.queue(r)) },
                    unit: "jobs"
                )
            )
            charts.append(
                plot(
                    "Cost so far (USD), by policy",
                    frame,
                    results.enumerated().map { i, r in
                        (
                            names[i], policyColours[i % 5],
                            cumulative(frame.cost(r).values.reduce(into: frame.zeros) { a, v in add(&a, v) })
                        )
                    },
                    unit: "USD"
                )
            )
        }
        for r in results {
            let name = results.count > 1 ? " — \(r.policy.rawValue)" : ""
            charts.append(gantt("GPUs over time\(name): tenant and kind", frame, r))
            let b = frame.busy(r)
            charts.append(
                plot(
                    "GPUs busy, lent and idle\(name)",
                    frame,
                    [
                        ("training", "#2b6cb0", b.training), ("training on loan", "#dd8452", b.lent),
                        ("inference", "#55a868", b.inference),
                        ("idle", "#dddddd", b.total.map { max(0, r.totalGPUs - $0) }),
                    ],
                    unit: "GPUs",
                    stacked: true
                )
            )
            let (p50, p99) = frame.waits(r)
            charts.append(plot("Jobs waiting\(name)", frame, [("waiting", "#444444", frame.queue(r))], unit: "jobs"))
            charts.append(
                plot(
                    "Wait of the jobs that started (minutes)\(name)",
                    frame,
                    [("p50", "#2b6cb0", p50.map { $0 / 60 }), ("p99", "#c44e52", p99.map { $0 / 60 })],
                    unit: "min"
                )
            )
            let costs = frame.cost(r)
            let tenants = frame.tenantOrder(r)
            charts.append(
                plot(
                    "Cost so far per tenant (USD)\(name)",
                    frame,
                    tenants.enumerated().map { i, t in
                        (t, i < palette.count ? palette[i] : otherColour, cumulative(costs[t] ?? frame.zeros))
                    },
                    unit: "USD"
                )
            )
        }
        let summaries = results.map { $0.summary() }
        if svg {
            var y = 40
            var body = ""
            body += "<text x=\"20\" y=\"28\" font-size=\"18\" font-weight=\"bold\">\(escape(title))</text>\n"
            for line in summaryLines(summaries) {
                body +=
                    "<text x=\"20\" y=\"\(y + 14)\" font-size=\"12\" font-family=\"monospace\">\(escape(line))</text>\n"
                y += 16
            }
            y += 10
            for c in charts {
                body += "<g transform=\"translate(0,\(y))\">\(c.body)</g>\n"
                y += c.height + 10
            }
            return
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" height=\"\(y)\" font-family=\"sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
                + body + "</svg>\n"
        }
        var html = """
            <!doctype html>
            <html><head><meta charset="utf-8"><title>\(escape(title))</title>
            <style>body{font-family:sans-serif;margin:20px;color:#222}table{border-collapse:collapse;margin:10px 0}
            td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}
            svg{display:block;margin:8px 0}</style></head><body>
            <h1>\(escape(title))</h1>

            """
        html += summaryTable(summaries)
        for c in charts {
            html +=
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" height=\"\(c.height)\">\(c.body)</svg>\n"
        }
        return html + "</body></html>\n"
    }

    static let width = 1200
    static let plotLeft = 70
    static let plotWidth = 1000

    // MARK: - What is drawn

    /// The time axis shared by every chart, and the sums per time slice.
    struct Frame {
        let start: Double
        let end: Double
        let width: Double
        var zeros: [Double] { [Double](repeating: 0, count: SimulationReport.bins) }

        init(_ results: [SimulationResult]) {
            let start = results.map(\.firstSubmit).min() ?? 0
            var end = start + 1
            for r in results {
                for run in r.runs { end = max(end, run.end) }
                end = max(end, r.lastArrival)
            }
            self.start = start
            self.end = end
            width = (end - start) / Double(SimulationReport.bins)
        }

        /// Adds `weight` × the time [a, b) spends in each slice to `into`.
        func spread(_ a: Double, _ b: Double, weight: Double, into: inout [Double]) {
            guard b > a, weight != 0 else { return }
            let n = SimulationReport.bins
            let fa = (a - start) / width
            let fb = (b - start) / width
            let ia = max(0, min(n - 1, Int(fa)))
            let ib = max(0, min(n - 1, Int(fb)))
            if ia == ib {
                into[ia] += weight * (b - a)
                return
            }
            into[ia] += weight * (Double(ia + 1) - fa) * width
            for i in (ia + 1)..<ib { into[i] += weight * width }
            into[ib] += weight * (fb - Double(ib)) * width
        }

        /// GPUs in use on average per slice: all, training (not on loan), on loan, inference.
        func busy(_ r: SimulationResult) -> (total: [Double], training: [Double], lent: [Double], inference: [Double]) {
            var training = zeros
            var lent = zeros
            var inference = zeros
            for run in r.runs {
                let w = run.allocation.gpuEquivalent
                if run.kind == .inference {
                    spread(run.start, run.end, weight: w, into: &inference)
                } else if run.lent {
                    spread(run.start, run.end, weight: w, into: &lent)
                } else {
                    spread(run.start, run.end, weight: w, into: &training)
                }
            }
            let perSecond = 1 / width
            let t = training.map { $0 * perSecond }
            let l = lent.map { $0 * perSecond }
            let i = inference.map { $0 * perSecond }
            return (zip(zip(t, l), i).map { $0.0 + $0.1 + $1 }, t, l, i)
        }

        /// Jobs waiting on average per slice: from submit to their first start, between runs, and to the end
        /// for jobs that never start.
        func queue(_ r: SimulationResult) -> [Double] {
            var q = zeros
            var runsOf: [JobID: [RunRecord]] = [:]
            for run in r.runs { runsOf[run.job, default: []].append(run) }
            for job in r.state.jobs {
                var from = job.submitTime.seconds
                for run in (runsOf[job.id] ?? []).sorted(by: { $0.start < $1.start }) {
                    spread(from, run.start, weight: 1, into: &q)
                    from = run.end
                }
                if runsOf[job.id] == nil || !job.state.isTerminal { spread(from, end, weight: 1, into: &q) }
            }
            return q.map { $0 / width }
        }

        /// p50 and p99 of the wait (submit to first start) of the jobs first started in each slice (over
        /// slices eight times wider, so that each has enough jobs), drawn as steps.
        func waits(_ r: SimulationResult) -> ([Double], [Double]) {
            let group = 8
            var waits = [[Double]](repeating: [], count: SimulationReport.bins / group)
            for job in r.state.jobs {
                guard let first = job.firstStartTime?.seconds else { continue }
                let i = max(0, min(waits.count - 1, Int((first - start) / width) / group))
                waits[i].append(first - job.submitTime.seconds)
            }
            var p50 = zeros
            var p99 = zeros
            for (g, w) in waits.enumerated() {
                let s = w.sorted()
                for k in 0..<group {
                    p50[g * group + k] = SimulationResult.percentile(s, 0.50)
                    p99[g * group + k] = SimulationResult.percentile(s, 0.99)
                }
            }
            return (p50, p99)
        }

        /// Money spent per slice, by tenant (the first ``maxTenants`` by spend, the rest as "other").
        func cost(_ r: SimulationResult) -> [String: [Double]] {
            let top = Set(tenantOrder(r))
            var out: [String: [Double]] = [:]
            for run in r.runs {
                let t = top.contains(run.tenant) ? run.tenant : "other"
                spread(run.start, run.end, weight: run.costPerSecond, into: &out[t, default: zeros])
            }
            return out
        }

        /// Tenants by GPU-time, the most first; "other" last when there are more than ``maxTenants``.
        func tenantOrder(_ r: SimulationResult) -> [String] {
            var use: [String: Double] = [:]
            for run in r.runs { use[run.tenant, default: 0] += run.allocation.gpuEquivalent * (run.end - run.start) }
            let sorted = use.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.map(\.key)
            return sorted.count > SimulationReport.maxTenants
                ? Array(sorted.prefix(SimulationReport.maxTenants - 1)) + ["other"] : sorted
        }
    }

    static func add(_ a: inout [Double], _ b: [Double]) { for i in a.indices { a[i] += b[i] } }

    static func cumulative(_ v: [Double]) -> [Double] {
        var sum = 0.0
        return v.map {
            sum += $0
            return sum
        }
    }

    // MARK: - Charts

    /// A GPU Gantt chart: a row per GPU (or per group of neighbouring GPUs, at most ``maxRows``), each time
    /// slice coloured by the tenant (hue) and kind (training dark, inference light) that used it most.
    static func gantt(_ title: String, _ f: Frame, _ r: SimulationResult) -> (title: String, height: Int, body: String)
    {
        var rowOf: [String: Int] = [:]
        var gpus = 0
        for node in r.state.nodes {
            for g in 0..<node.spec.gpus {
                rowOf["\(node.name):\(g)"] = gpus
                gpus += 1
            }
        }
        let per = max(1, (gpus + maxRows - 1) / maxRows)
        let rows = max(1, (gpus + per - 1) / per)
        let tenants = f.tenantOrder(r)
        let tenantIndex = Dictionary(uniqueKeysWithValues: tenants.enumerated().map { ($1, $0) })
        let keys = tenants.count * 2
        // Per row and key, the GPU-seconds of each slice.
        var use = [[Double]](repeating: f.zeros, count: rows * max(1, keys))
        for run in r.runs {
            let t = tenantIndex[run.tenant] ?? tenantIndex["other"] ?? 0
            let key = t * 2 + (run.kind == .inference ? 1 : 0)
            let weight = run.allocation.gpuEquivalent / Double(max(1, run.allocation.gpuCount))
            for slice in run.allocation.slices {
                for g in slice.gpus {
                    guard let row = rowOf["\(slice.node):\(g)"] else { continue }
                    f.spread(run.start, run.end, weight: weight, into: &use[(row / per) * keys + key])
                }
            }
        }
        let rowHeight = max(1.0, min(6.0, 360.0 / Double(rows)))
        let height = Int(Double(rows) * rowHeight) + 80
        var body = header(title, f, height: height - 40)
        let cell = Double(plotWidth) / Double(bins)
        let capacity = f.width * Double(per)
        for row in 0..<rows {
            var runStart = 0
            var current: (key: Int, level: Int)? = nil
            func flush(_ upTo: Int) {
                guard let c = current, c.level > 0 else { return }
                let colour =
                    c.key / 2 < palette.count && tenants[c.key / 2] != "other" ? palette[c.key / 2] : otherColour
                let opacity = [0, 0.35, 0.55, 0.8, 1.0][c.level] * (c.key % 2 == 1 ? 0.55 : 1)
                body += String(
                    format:
                        "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%@\" fill-opacity=\"%.2f\"/>",
                    Double(plotLeft) + Double(runStart) * cell,
                    30 + Double(row) * rowHeight,
                    Double(upTo - runStart) * cell,
                    rowHeight,
                    colour,
                    opacity
                )
            }
            for b in 0..<bins {
                var best = -1
                var bestUse = 0.0
                var total = 0.0
                for k in 0..<keys {
                    let u = use[row * keys + k][b]
                    total += u
                    if u > bestUse {
                        bestUse = u
                        best = k
                    }
                }
                let level = best < 0 ? 0 : min(4, max(1, Int((total / capacity * 4).rounded(.up))))
                let c = (key: max(best, 0), level: level)
                if current.map({ $0.key != c.key || $0.level != c.level }) ?? true {
                    flush(b)
                    current = c
                    runStart = b
                }
            }
            flush(bins)
        }
        body += "<text x=\"8\" y=\"40\" font-size=\"11\">\(gpus) GPUs\(per > 1 ? " (\(per) a row)" : "")</text>"
        // Legend: tenants, and how kinds look.
        var x = Double(plotLeft)
        let y = Double(height - 14)
        for (i, t) in tenants.enumerated() {
            let colour = i < palette.count && t != "other" ? palette[i] : otherColour
            body += "<rect x=\"\(x)\" y=\"\(y - 9)\" width=\"10\" height=\"10\" fill=\"\(colour)\"/>"
            body += "<text x=\"\(x + 14)\" y=\"\(y)\" font-size=\"11\">\(escape(t))</text>"
            x += 20 + Double(t.count) * 7
        }
        body += "<text x=\"\(x + 10)\" y=\"\(y)\" font-size=\"11\">(inference lighter; stronger = busier)</text>"
        return (title, height, body)
    }

    /// Lines over time (`stacked`: areas, each on those before it).
    static func plot(
        _ title: String,
        _ f: Frame,
        _ series: [(name: String, colour: String, values: [Double])],
        unit: String,
        stacked: Bool = false
    ) -> (title: String, height: Int, body: String) {
        let plotHeight = 180.0
        let height = Int(plotHeight) + 80
        var body = header(title, f, height: Int(plotHeight))
        var tops = [Double](repeating: 0, count: bins)
        var layers: [[Double]] = []
        for s in series {
            if stacked {
                for i in 0..<bins { tops[i] += s.values[i] }
                layers.append(tops)
            } else {
                layers.append(s.values)
            }
        }
        let maxY = niceCeiling(layers.flatMap { $0 }.max() ?? 1)
        let cell = Double(plotWidth) / Double(bins)
        func y(_ v: Double) -> Double { 30 + plotHeight - v / maxY * plotHeight }
        for k in 0...4 {
            let v = maxY * Double(k) / 4
            body +=
                "<line x1=\"\(plotLeft)\" x2=\"\(plotLeft + plotWidth)\" y1=\"\(y(v))\" y2=\"\(y(v))\" stroke=\"#eee\"/>"
            body += String(
                format: "<text x=\"%d\" y=\"%.1f\" font-size=\"10\" text-anchor=\"end\">%@</text>",
                plotLeft - 4,
                y(v) + 3,
                short(v)
            )
        }
        body += "<text x=\"8\" y=\"24\" font-size=\"10\">\(escape(unit))</text>"
        // Stacked areas from the top layer down, so each is drawn over the next.
        let order = stacked ? Array(series.indices.reversed()) : Array(series.indices)
        for i in order {
            var points = ""
            for b in 0..<bins {
                points += String(format: "%.1f,%.1f ", Double(plotLeft) + (Double(b) + 0.5) * cell, y(layers[i][b]))
            }
            if stacked {
                let base = String(
                    format: "%.1f,%.1f %.1f,%.1f",
                    Double(plotLeft + plotWidth),
                    y(0),
                    Double(plotLeft),
                    y(0)
                )
                body += "<polygon points=\"\(points)\(base)\" fill=\"\(series[i].colour)\" stroke=\"none\"/>"
            } else {
                body +=
                    "<polyline points=\"\(points)\" fill=\"none\" stroke=\"\(series[i].colour)\" stroke-width=\"1.5\"/>"
            }
        }
        var x = Double(plotLeft)
        let ly = Double(height - 14)
        for s in series {
            body += "<rect x=\"\(x)\" y=\"\(ly - 9)\" width=\"10\" height=\"10\" fill=\"\(s.colour)\"/>"
            body += "<text x=\"\(x + 14)\" y=\"\(ly)\" font-size=\"11\">\(escape(s.name))</text>"
            x += 24 + Double(s.name.count) * 7
        }
        return (title, height, body)
    }

    /// A chart's title, frame and time axis (hours, or days for long traces, since the first submit).
    static func header(_ title: String, _ f: Frame, height: Int) -> String {
        var s = "<text x=\"\(plotLeft)\" y=\"18\" font-size=\"14\" font-weight=\"bold\">\(escape(title))</text>"
        s +=
            "<rect x=\"\(plotLeft)\" y=\"30\" width=\"\(plotWidth)\" height=\"\(height)\" fill=\"none\" stroke=\"#999\"/>"
        let span = f.end - f.start
        let days = span > 3 * 86_400
        let unit = days ? 86_400.0 : 3600.0
        let step = niceCeiling(span / unit / 10)
        var t = 0.0
        while t * unit <= span {
            let x = Double(plotLeft) + t * unit / span * Double(plotWidth)
            s += String(
                format: "<text x=\"%.1f\" y=\"%d\" font-size=\"10\" text-anchor=\"middle\">%@%@</text>",
                x,
                30 + height + 12,
                short(t),
                days ? "d" : "h"
            )
            t += step
        }
        return s
    }

    static func niceCeiling(_ v: Double) -> Double {
        guard v > 0 && v.isFinite else { return 1 }
        var p = 1.0
        while p * 10 <= v { p *= 10 }
        while p > v { p /= 10 }
        for m in [1.0, 2, 2.5, 5, 10] where m * p >= v { return m * p }
        return 10 * p
    }

    static func short(_ v: Double) -> String {
        if v >= 1e6 { return trim(v / 1e6) + "M" }
        if v >= 1e4 { return trim(v / 1e3) + "k" }
        return trim(v)
    }

    static func trim(_ v: Double) -> String {
        v == v.rounded() ? String(Int(v)) : String((v * 10).rounded() / 10)
    }

    // MARK: - Figures

    static func summaryRows(_ s: [SimulationResult.Summary]) -> [(String, [String])] {
        func h(_ v: Double) -> String { String(format: "%.2f h", v / 3600) }
        return [
            ("jobs (completed)", s.map { "\($0.jobs) (\($0.completed))" }), ("makespan", s.map { h($0.makespan) }),
            ("average JCT", s.map { h($0.avgJCT) }), ("p99 JCT", s.map { h($0.p99JCT) }),
            ("average wait", s.map { h($0.avgWait) }), ("p99 wait", s.map { h($0.p99Wait) }),
            ("GPU utilization", s.map { String(format: "%.1f%%", $0.utilization * 100) }),
            ("idle while a job could use it", s.map { String(format: "%.1f%%", $0.waste * 100) }),
            ("cost", s.map { String(format: "$%.2f", $0.costUSD) }),
            ("GPU-hours", s.map { String(format: "%.1f", $0.gpuHours) }),
            ("preemptions / reclaims / loans", s.map { "\($0.preemptions) / \($0.reclaims) / \($0.loans)" }),
            ("moves to faster GPUs", s.map { String($0.moves) }),
            ("elastic jobs: grew / shrank", s.map { "\($0.grows) / \($0.shrinks)" }),
            ("work lost to stops and restarts", s.map { String(format: "%.1f GPU-h", $0.lostGPUHours) }),
            ("never start", s.map { String($0.unschedulable) }),
        ] + reserveRows(s)
    }

    /// The inference reserve's rows, when a run had one.
    static func reserveRows(_ s: [SimulationResult.Summary]) -> [(String, [String])] {
        guard s.contains(where: { $0.reserve != nil }) else { return [] }
        func each(_ f: (SimulationResult.ReserveFigures) -> String) -> [String] {
            s.map { $0.reserve.map(f) ?? "–" }
        }
        return [
            ("inference reserve: loans / taken back", each { "\($0.loans) / \($0.takenBack)" }),
            ("work lost to loans taken back", each { String(format: "%.1f GPU-h", $0.lostGPUHours) }),
            ("spill-over to dearer GPUs", each { String(format: "$%.2f", $0.spillOverUSD) }),
        ]
    }

    static func summaryTable(_ s: [SimulationResult.Summary]) -> String {
        var t = "<table><tr><th></th>" + s.map { "<th>\(escape($0.policy))</th>" }.joined() + "</tr>\n"
        for (name, values) in summaryRows(s) {
            t += "<tr><td>\(escape(name))</td>" + values.map { "<td>\(escape($0))</td>" }.joined() + "</tr>\n"
        }
        return t + "</table>\n"
    }

    static func summaryLines(_ s: [SimulationResult.Summary]) -> [String] {
        let rows = summaryRows(s)
        var lines = ["".padding(toLength: 32, withPad: " ", startingAt: 0) + s.map { pad($0.policy) }.joined()]
        for (name, values) in rows {
            lines.append(name.padding(toLength: 32, withPad: " ", startingAt: 0) + values.map(pad).joined())
        }
        return lines
    }

    static func pad(_ s: String) -> String { s.count >= 18 ? s + " " : s + String(repeating: " ", count: 18 - s.count) }

    static func escape(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            default: out.append(c)
            }
        }
        return out
    }
}
