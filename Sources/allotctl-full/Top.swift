import AllotProtocol
import AllotText
import ArgumentParser
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// `allotctl top`: a live, full-screen view of the pool that follows allotd's event stream. It asks allotd
/// for a bounded summary (`top`) when something changed, at most once per `--interval`, never for every job.
struct Top: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A live view: nodes GPU by GPU, the queue with each job's blocker, running jobs, tenants' burn.",
        discussion: """
            Each node is a row of GPU cells: T training, I inference (t, i: a share or MIG slice), L running on
            loan, S stopping, r reserved, . free, d draining, X unhealthy, - down. The queue is in the
            scheduler's order with each job's first blocker; running jobs show their node, time left and cost
            per hour; tenants their GPUs, burn rate and spend against their budget; loans, reclaims and
            preemptions are listed as they happen.

            Keys: q quits; s changes the order (priority, time, gpus, cost); k the kind shown (all, training,
            inference); t the tenant; u shows only the selected job's user (again: everyone); up and down
            select a job; w or Enter shows why it waits or runs where it does; r refreshes.

            It redraws when allotd reports a change (at most once per --interval), follows the terminal's
            size, and reconnects when allotd restarts. Not on a terminal, or with --once, it prints one
            snapshot as text.
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @Option(name: .long, help: "Only this tenant's jobs.")
    var tenant: String?

    @Option(name: .long, help: "Only this user's jobs (name or uid).")
    var user: String?

    @Option(name: .long, help: "Only jobs of this kind (training or inference).")
    var kind: String?

    @Option(name: .long, help: "The order of the lists: priority, time, gpus or cost.")
    var sort: String = "priority"

    @Option(name: .long, help: "The least time between two redraws, in seconds.")
    var interval: Double = 1

    @Flag(name: .long, help: "Print one snapshot as text and exit.")
    var once = false

    @Flag(name: .long, help: "Print one snapshot as JSON (the `top` object) and exit.")
    var json = false

    func validate() throws {
        guard TopParams.sorts.contains(sort) else {
            throw ValidationError("--sort: expected one of \(TopParams.sorts.joined(separator: ", ")), got \"\(sort)\"")
        }
        if let kind, kind != "training" && kind != "inference" {
            throw ValidationError("--kind: expected training or inference, got \"\(kind)\"")
        }
        guard interval > 0 && interval.isFinite else { throw ValidationError("--interval: expected seconds > 0") }
    }

    func run() throws {
        var view = TopView(sort: sort, kind: kind, tenant: tenant, user: user)
        if json || once || isatty(1) != 1 || isatty(0) != 1 {
            try talking {
                let client = try connection.connect()
                let r: TopResult = try client.call(Methods.top, view.params(limit: json ? nil : 20))
                if json { return try printJSON(r) }
                let width = Int(ProcessInfo.processInfo.environment["COLUMNS"] ?? "") ?? 120
                out(view.render(r, width: max(40, width), height: nil).joined(separator: "\n") + "\n")
            }
            return
        }
        try TopScreen(connection: connection, interval: interval).run(&view)
    }
}

/// What the view shows and how: filters, order, the selected job, and the why pane.
struct TopView {
    var sort: String
    var kind: String?
    var tenant: String?
    var user: String?
    /// The selected row of the lists (the queue's first, then the running jobs').
    var selected = 0
    /// The why pane, when open: the job and its lines.
    var why: (id: UInt64, lines: [String])?
    /// A line on the state of the link to allotd, when it is not well.
    var problem: String?

    func params(limit: Int?) -> TopParams {
        TopParams(tenant: tenant, user: user, kind: kind, sort: sort, limit: limit)
    }

    /// The jobs of the lists as drawn, in order (for selecting).
    static func rows(_ r: TopResult) -> [TopJob] { r.queue + r.running }

    /// The lines to draw, each at most `width` characters; all of them when `height` is nil (text), else
    /// exactly `height`. Lines of a terminal carry escape sequences (counted out of the width).
    func render(_ r: TopResult?, width: Int, height: Int?) -> [String] {
        let screen = height != nil
        func bold(_ s: String) -> String { screen ? "\u{1B}[1m\(s)\u{1B}[0m" : s }
        func fit(_ s: String) -> String { s.count <= width ? s : String(s.prefix(max(0, width - 1))) + "…" }
        var head: [String] = []
        let filters = [
            "sort: \(sort)", "kind: \(kind ?? "all")", "tenant: \(tenant ?? "all")", "user: \(user ?? "all")",
        ]
        head.append(
            bold(fit("allot top  \(r.map { Self.clock($0.time) } ?? "--:--:--")  " + filters.joined(separator: "  ")))
        )
        if let problem { head.append(fit("! \(problem)")) }
        guard let r else {
            return pad(head + ["", "waiting for allotd…"], height)
        }
        let g = r.gpus
        let summary = [
            "GPUs \(g["total"] ?? 0):", "\(g["training"] ?? 0) training,", "\(g["inference"] ?? 0) inference,",
            "\(g["lent"] ?? 0) lent,", "\(g["reserved"] ?? 0) reserved,", "\(g["free"] ?? 0) free",
        ]
        var extra: [String] = []
        for k in ["stopping", "draining", "unhealthy", "down"] where (g[k] ?? 0) > 0 { extra.append("\(g[k]!) \(k)") }
        head.append(
            fit(
                summary.joined(separator: " ") + (extra.isEmpty ? "" : ", " + extra.joined(separator: ", "))
                    + "  |  jobs: \(r.runningCount) running, \(r.pending) waiting"
            )
        )

        // Nodes: as many blocks per line as fit.
        let nameWidth = min(14, r.nodes.map(\.name.count).max() ?? 4)
        let cellWidth = r.nodes.map(\.cells.count).max() ?? 0
        let block = nameWidth + cellWidth + 3
        let perLine = max(1, (width + 1) / (block + 1))
        var nodeLines: [(plain: String, drawn: String)] = []
        var line: (plain: String, drawn: String) = ("", "")
        for (i, n) in r.nodes.enumerated() {
            let name = n.name.count > nameWidth ? String(n.name.prefix(nameWidth - 1)) + "…" : n.name
            let padded = name.padding(toLength: nameWidth, withPad: " ", startingAt: 0)
            let fill = String(repeating: " ", count: max(0, cellWidth - n.cells.count))
            let plain = "\(padded) [\(n.cells)]\(fill)"
            let drawn = "\(padded) [\(screen ? Self.colour(n.cells) : n.cells)]\(fill)"
            line.plain += (line.plain.isEmpty ? "" : " ") + plain
            line.drawn += (line.drawn.isEmpty ? "" : " ") + drawn
            if (i + 1) % perLine == 0 {
                nodeLines.append(line)
                line = ("", "")
            }
        }
        if !line.plain.isEmpty { nodeLines.append(line) }

        let tenantLines = r.tenants.map { t -> String in
            let budget = t.budgetUSD.map { b in
                let pct = b > 0 ? Int((t.spentUSD / b * 100).rounded()) : 0
                return "$\(Self.money(t.spentUSD)) of $\(Self.money(b)) this \(t.window) (\(pct)%)"
            }
            return fit(
                "  \(t.name.padding(toLength: 12, withPad: " ", startingAt: 0)) \(Self.right(String(t.gpus), 5)) GPUs "
                    + "\(Self.right(String(t.running), 4)) running \(Self.right(String(t.pending), 6)) waiting  "
                    + "$\(Self.money(t.usdPerHour))/h  " + (budget ?? "$\(Self.money(t.spentUSD)) today")
            )
        }
        let momentLines = r.moments.reversed().map { fit("  \(Self.clock($0.time))  \($0.text)") }

        let all = Self.rows(r)
        let selected = all.isEmpty ? -1 : min(selected, all.count - 1)
        func jobLine(_ j: TopJob, _ index: Int, queue: Bool) -> String {
            var cells = [
                Self.right(String(j.id), 7),
                String(j.name.prefix(14)).padding(toLength: 14, withPad: " ", startingAt: 0),
                String(j.user.prefix(9)).padding(toLength: 9, withPad: " ", startingAt: 0),
                String(j.tenant.prefix(10)).padding(toLength: 10, withPad: " ", startingAt: 0),
                j.kind == "training" ? "train" : "infer", Self.right(Self.gpus(j.gpus), 5),
            ]
            if queue {
                cells += [Self.right(DurationText.format(j.waitS ?? 0), 7), j.reason ?? ""]
            } else {
                cells += [
                    String((j.model ?? "").prefix(6)).padding(toLength: 6, withPad: " ", startingAt: 0),
                    String((j.node ?? "").prefix(12)).padding(toLength: 12, withPad: " ", startingAt: 0),
                    Self.right(j.leftS.map { DurationText.format($0) } ?? "-", 7),
                    Self.right("$" + Self.money(j.usdPerHour ?? 0), 8), j.reason ?? "",
                ]
            }
            let text = fit(cells.joined(separator: " "))
            return screen && index == selected
                ? "\u{1B}[7m" + text.padding(toLength: min(width, max(text.count, width)), withPad: " ", startingAt: 0)
                    + "\u{1B}[0m"
                : text
        }
        let queueHeader = bold(fit("QUEUE  \(r.pending) waiting, by \(sort)"))
        let queueColumns = fit("     ID NAME           USER      TENANT     KIND   GPUS    WAIT BLOCKER")
        let runHeader = bold(fit("RUNNING  \(r.runningCount)"))
        let runColumns = fit(
            "     ID NAME           USER      TENANT     KIND   GPUS MODEL  NODE            LEFT      $/H"
        )

        guard let height else {
            var out = head + ["", bold("NODES")] + nodeLines.map(\.plain)
            if !tenantLines.isEmpty { out += ["", bold("TENANTS")] + tenantLines }
            out += ["", queueHeader, queueColumns] + r.queue.enumerated().map { jobLine($1, $0, queue: true) }
            out +=
                ["", runHeader, runColumns]
                + r.running.enumerated().map { jobLine($1, r.queue.count + $0, queue: false) }
            if !momentLines.isEmpty { out += ["", bold("RECENT")] + momentLines }
            return out
        }

        // A screen: the nodes get up to a quarter of it, tenants and moments a few lines, the lists the rest.
        let footer = fit("q quit  s sort  k kind  t tenant  u user  ↑↓ select  w why  r refresh")
        var body: [String] = []
        let nodeRoom = max(2, height / 4)
        var shownNodes = nodeLines.map(\.drawn)
        if shownNodes.count > nodeRoom {
            let hidden = r.nodes.count - (nodeRoom - 1) * perLine
            shownNodes = Array(shownNodes.prefix(nodeRoom - 1)) + ["… \(hidden) more nodes (--once lists them all)"]
        }
        body += [bold("NODES")] + shownNodes
        if !tenantLines.isEmpty { body += [bold("TENANTS")] + tenantLines.prefix(max(1, height / 8)) }
        if !momentLines.isEmpty { body += [bold("RECENT")] + momentLines.prefix(3) }
        let left = height - head.count - body.count - 1
        var lists: [String] = []
        if let why {
            lists = [bold(fit("WHY  job \(why.id)  (any key: back)"))] + why.lines.map { fit("  " + $0) }
        } else if left > 0 {
            // Headers take 2 lines each; the queue gets half of the rows, or more when few run.
            let rows = max(0, left - 4)
            let runRows = min(r.running.count, rows / 2)
            let queueRows = min(r.queue.count, rows - runRows)
            let runShown = min(r.running.count, rows - queueRows)
            lists = [queueHeader, queueColumns]
            // Keep the selected queue row on screen.
            let qStart = selected < r.queue.count && selected >= queueRows ? selected - queueRows + 1 : 0
            lists += r.queue.enumerated().dropFirst(qStart).prefix(queueRows).map { jobLine($1, $0, queue: true) }
            lists += [runHeader, runColumns]
            let rSel = selected - r.queue.count
            let rStart = rSel >= runShown ? rSel - runShown + 1 : 0
            lists += r.running.enumerated().dropFirst(max(0, rStart)).prefix(runShown).map {
                jobLine($1, r.queue.count + $0, queue: false)
            }
        }
        return pad(head + body + lists.prefix(max(0, left)), height - 1) + [footer]
    }

    func pad(_ lines: [String], _ height: Int?) -> [String] {
        guard let height else { return lines }
        return Array((lines + Array(repeating: "", count: max(0, height - lines.count))).prefix(height))
    }

    static func colour(_ cells: String) -> String {
        var s = ""
        for c in cells {
            let code: String? =
                switch c {
                case "T", "t": "32"
                case "I", "i": "34"
                case "L": "33"
                case "S": "35"
                case "r": "36"
                case "X": "31"
                case "-", "d": "90"
                default: nil
                }
            s += code.map { "\u{1B}[\($0)m\(c)\u{1B}[0m" } ?? String(c)
        }
        return s
    }

    /// `2026-12-03T17:49:29Z` → `17:49:29`.
    static func clock(_ time: String) -> String {
        guard let t = time.firstIndex(of: "T") else { return time }
        return String(time[time.index(after: t)...].prefix(8))
    }

    static func money(_ v: Double) -> String { String(format: "%.2f", v) }
    static func gpus(_ v: Double) -> String { v == v.rounded() ? String(Int(v)) : String(format: "%.2f", v) }
    static func right(_ s: String, _ n: Int) -> String {
        s.count >= n ? s : String(repeating: " ", count: n - s.count) + s
    }
}

/// The full-screen loop: draws, reads keys, follows allotd's events, reconnects.
struct TopScreen {
    let connection: ConnectionOptions
    let interval: Double

    func run(_ view: inout TopView) throws {
        Attached.openSignalPipe()
        for sig in [SIGINT, SIGTERM, SIGHUP, SIGWINCH] { Attached.catchSignal(sig) }
        // allotctl's own error lines would scribble over the screen: the view says what is wrong instead.
        let savedErr = dup(2)
        let null = open("/dev/null", O_WRONLY | O_CLOEXEC)
        if null >= 0 { dup2(null, 2) }
        Attached.rawMode()
        write("\u{1B}[?1049h\u{1B}[?25l")
        defer {
            write("\u{1B}[?25h\u{1B}[?1049l")
            Attached.restoreTerminal()
            if savedErr >= 0 { dup2(savedErr, 2) }
        }
        var client: Client?
        var watcher: Client?
        var result: TopResult?
        var dirty = true
        var lastFetch = -Double.infinity
        var nextTry = 0.0
        var input: [UInt8] = []
        func now() -> Double { Date().timeIntervalSince1970 }
        func drop(_ why: String) {
            client = nil
            watcher = nil
            view.problem = "\(why); reconnecting to \(connection.path) every second"
            nextTry = now() + 1
        }
        while true {
            if client == nil && now() >= nextTry {
                do {
                    let c = try connection.connect()
                    let w = try connection.connect()
                    let _: WatchResult = try w.call(Methods.watch, NoParams())
                    (client, watcher) = (c, w)
                    view.problem = nil
                    dirty = true
                } catch {
                    drop("allotd is not answering")
                }
            }
            if let c = client, (dirty && now() - lastFetch >= interval) || now() - lastFetch >= 5 {
                do {
                    result = try c.call(Methods.top, view.params(limit: 200))
                    lastFetch = now()
                    dirty = false
                } catch let e as RPCError {
                    view.problem = e.message
                    lastFetch = now()
                    dirty = false
                } catch {
                    drop("lost allotd")
                }
            }
            draw(view, result)
            // Until a key, a signal, an event, the next redraw or the next try to reconnect.
            let wake = client == nil ? nextTry : (dirty ? lastFetch + interval : lastFetch + 5)
            var fds = [
                pollfd(fd: 0, events: Int16(POLLIN), revents: 0),
                pollfd(fd: signalPipe.read, events: Int16(POLLIN), revents: 0),
                pollfd(fd: watcher?.fd ?? -1, events: Int16(POLLIN), revents: 0),
            ]
            let ms = Int32(max(0, min(5, wake - now())) * 1000)
            if poll(&fds, 3, ms) < 0 && errno != EINTR { return }
            if fds[1].revents != 0 {
                var sig: UInt8 = 0
                while read(signalPipe.read, &sig, 1) == 1 {
                    if Int32(sig) != SIGWINCH { return }
                }
            }
            if fds[2].revents != 0, let w = watcher {
                var chunk = [UInt8](repeating: 0, count: 65536)
                let n = read(w.fd, &chunk, chunk.count)
                if n <= 0 { drop("lost allotd") } else { dirty = true }
            }
            if fds[0].revents != 0 {
                var chunk = [UInt8](repeating: 0, count: 64)
                let n = read(0, &chunk, chunk.count)
                if n <= 0 { return }
                input += chunk[0..<n]
                while !input.isEmpty {
                    if view.why != nil {
                        view.why = nil
                        input.removeAll()
                        break
                    }
                    let rows = result.map(TopView.rows) ?? []
                    let key = input.removeFirst()
                    switch key {
                    case UInt8(ascii: "q"), UInt8(ascii: "Q"), 3, 4: return
                    case UInt8(ascii: "s"):
                        let i = TopParams.sorts.firstIndex(of: view.sort) ?? 0
                        view.sort = TopParams.sorts[(i + 1) % TopParams.sorts.count]
                        (view.selected, dirty, lastFetch) = (0, true, -.infinity)
                    case UInt8(ascii: "k"):
                        view.kind = view.kind == nil ? "training" : view.kind == "training" ? "inference" : nil
                        (view.selected, dirty, lastFetch) = (0, true, -.infinity)
                    case UInt8(ascii: "t"):
                        let names = [nil] + (result?.tenants.map(\.name) ?? []).map { Optional($0) }
                        let i = names.firstIndex(of: view.tenant) ?? 0
                        view.tenant = names[(i + 1) % names.count]
                        (view.selected, dirty, lastFetch) = (0, true, -.infinity)
                    case UInt8(ascii: "u"):
                        if view.user != nil {
                            view.user = nil
                        } else if view.selected < rows.count {
                            view.user = rows[view.selected].user
                        }
                        (view.selected, dirty, lastFetch) = (0, true, -.infinity)
                    case UInt8(ascii: "r"): (dirty, lastFetch) = (true, -.infinity)
                    case UInt8(ascii: "w"), 13, 10:
                        if view.selected < rows.count, let c = client {
                            let id = rows[view.selected].id
                            if let w: WhyResult = try? c.call(Methods.why, IDParams(id: .job(id))) {
                                view.why = (id, ["job \(id) is \(w.state)"] + w.lines)
                            }
                        }
                    case 27:
                        // An arrow: ESC [ A (up) or ESC [ B (down).
                        if input.count >= 2 && input[0] == UInt8(ascii: "[") {
                            if input[1] == UInt8(ascii: "A") { view.selected = max(0, view.selected - 1) }
                            if input[1] == UInt8(ascii: "B") {
                                view.selected = min(max(0, rows.count - 1), view.selected + 1)
                            }
                            input.removeFirst(2)
                        }
                    default: break
                    }
                }
            }
        }
    }

    func draw(_ view: TopView, _ result: TopResult?) {
        var ws = winsize()
        let (rows, cols) =
            ioctl(1, UInt(TIOCGWINSZ), &ws) == 0 && ws.ws_row > 0 ? (Int(ws.ws_row), Int(ws.ws_col)) : (24, 80)
        let lines = view.render(result, width: cols, height: rows)
        var s = "\u{1B}[H"
        for (i, l) in lines.enumerated() {
            s += "\u{1B}[\(i + 1);1H" + l + "\u{1B}[K"
        }
        write(s)
    }

    func write(_ s: String) {
        Attached.writeAll(1, Array(s.utf8))
    }
}
