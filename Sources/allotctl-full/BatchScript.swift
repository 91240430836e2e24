import AllotCore
import Foundation

/// A batch script, read as sbatch reads one: its options come from `#ALLOT` lines (allotctl submit's own
/// options) and `#SBATCH` lines (Slurm's, translated where they map, a warning for each one that does not)
/// at its top, before the first line that is neither blank nor a comment. The job runs a copy of the
/// script taken at submit, so that editing it afterwards (to submit a variant) changes nothing queued.
struct BatchScript {
    /// `allotctl submit` options from the script's lines, in their order (a later one wins).
    var arguments: [String] = []
    /// What was not taken over, one sentence each.
    var warnings: [String] = []
    /// The script's text.
    var text = ""

    /// The most a script may hold: it travels in the job's command line (128 KiB per argument on Linux).
    static let maxBytes = 100 * 1024

    struct Problem: Error {
        let message: String
    }

    /// Reads the script at `path`.
    static func read(_ path: String) throws(Problem) -> BatchScript {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw Problem(message: "cannot read the batch script \(path)")
        }
        guard data.count <= maxBytes else {
            throw Problem(
                message:
                    "\(path) is \(data.count / 1024) KiB; a batch script may hold up to \(maxBytes / 1024) KiB (put the rest in a file it runs)"
            )
        }
        guard let text = String(data: data, encoding: .utf8), !text.contains("\0") else {
            throw Problem(message: "\(path) is not a text file; a batch script is text starting with #!")
        }
        return try parse(text, path: path)
    }

    /// Reads a script's text (`path` names it in messages).
    static func parse(_ text: String, path: String) throws(Problem) -> BatchScript {
        var script = BatchScript(text: text)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard let first = lines.first, first.hasPrefix("#!") else {
            throw Problem(
                message:
                    "\(path) does not start with #! and its interpreter (e.g. #!/bin/bash), as a batch script must; to run a command, give it after --"
            )
        }
        for (i, line) in lines.enumerated().dropFirst() {
            let t = line.trimmingWhitespace()
            if t.isEmpty { continue }
            guard t.hasPrefix("#") else { break }
            let at = "\(path):\(i + 1)"
            for (prefix, slurm) in [("#ALLOT", false), ("#SBATCH", true)] {
                guard t.hasPrefix(prefix) else { continue }
                let rest = t.dropFirst(prefix.count)
                guard rest.isEmpty || rest.first == " " || rest.first == "\t" else { continue }
                guard let words = words(rest) else { throw Problem(message: "\(at): an unclosed quote") }
                if slurm {
                    script.translate(words, at: at)
                } else {
                    script.arguments += words
                }
            }
        }
        if let problem = script.slurmProblem { throw Problem(message: problem) }
        script.finishSlurm()
        return script
    }

    /// The command that runs the copy of the script with `args`: a shell writes it to a private temporary
    /// file, runs it (its #! line chooses the interpreter) and removes it when it ends.
    func command(name: String, args: [String]) -> [String] {
        ["/bin/sh", "-c", Self.runner, name, text] + args
    }

    static let runner = """
        f=$(mktemp "${TMPDIR:-/tmp}/allot-script.XXXXXX") || exit 1
        trap 'rm -f "$f"' EXIT
        trap 'exit 143' TERM
        trap 'exit 130' INT
        printf '%s' "$1" >"$f" && chmod 700 "$f" || exit 1
        shift
        "$f" "$@"
        """

    /// For `show`: the script's name and arguments when `command` runs a batch script's copy.
    static func described(_ command: [String]) -> (name: String, args: [String])? {
        guard command.count >= 5, command[0] == "/bin/sh", command[1] == "-c", command[2] == runner else { return nil }
        return (command[3], Array(command[5...]))
    }

    // MARK: Shell words

    /// A line's words as a shell splits them (quotes, backslashes); a word starting with # ends the line.
    /// Nil when a quote is not closed.
    static func words(_ line: Substring) -> [String]? {
        var out: [String] = []
        var word = ""
        var inWord = false
        var quote: Character?
        var escaped = false
        for ch in line {
            if escaped {
                word.append(ch)
                escaped = false
                continue
            }
            if let q = quote {
                if ch == q {
                    quote = nil
                } else if ch == "\\" && q == "\"" {
                    escaped = true
                } else {
                    word.append(ch)
                }
                continue
            }
            switch ch {
            case " ", "\t":
                if inWord { out.append(word) }
                word = ""
                inWord = false
            case "\"", "'":
                quote = ch
                inWord = true
            case "\\":
                escaped = true
                inWord = true
            case "#" where !inWord:
                return out
            default:
                word.append(ch)
                inWord = true
            }
        }
        if quote != nil { return nil }
        if inWord { out.append(word) }
        return out
    }

    // MARK: Slurm's options

    /// What `#SBATCH` lines said, gathered before they become options (GPUs per node times nodes, …).
    private var slurm = Slurm()

    private struct Slurm {
        var nodes: Int?
        var gpusPerNode: Int?
        var gpus: Int?
        var model: String?
        var cpusPerTask: Int?
        var tasks: Int?
        var memoryPerNodeMiB: Int?
        var memoryPerCPUMiB: Int?
        var memoryPerGPUMiB: Int?
        var problem: String?
    }

    var slurmProblem: String? { slurm.problem }

    /// Options that take no value.
    static let slurmFlags: Set<String> = [
        "exclusive", "requeue", "no-requeue", "hold", "overcommit", "quiet", "wait", "verbose", "parsable",
        "test-only", "contiguous", "spread-job", "use-min-nodes", "oversubscribe", "H", "O", "Q", "W", "v", "s",
    ]

    /// Slurm's short options and their long names.
    static let slurmShort: [String: String] = [
        "G": "gpus", "t": "time", "J": "job-name", "o": "output", "e": "error", "D": "chdir", "d": "dependency",
        "a": "array", "p": "partition", "c": "cpus-per-task", "n": "ntasks", "N": "nodes", "A": "account",
        "q": "qos", "C": "constraint", "w": "nodelist", "x": "exclude", "i": "input", "L": "licenses",
        "m": "distribution", "H": "hold", "O": "overcommit", "Q": "quiet", "W": "wait", "v": "verbose",
        "s": "oversubscribe",
    ]

    /// Translates one `#SBATCH` line's words.
    private mutating func translate(_ words: [String], at: String) {
        var i = 0
        while i < words.count {
            let w = words[i]
            i += 1
            var name: String
            var value: String?
            if w.hasPrefix("--") {
                name = String(w.dropFirst(2))
                if let eq = name.firstIndex(of: "=") {
                    value = String(name[name.index(after: eq)...])
                    name = String(name[..<eq])
                }
            } else if w.hasPrefix("-"), w.count >= 2 {
                let letter = String(w.dropFirst().prefix(1))
                name = Self.slurmShort[letter] ?? letter
                if w.count > 2 { value = String(w.dropFirst(2)).drop { $0 == "=" }.description }
            } else {
                warnings.append("\(at): #SBATCH \(w): not an option; ignored")
                continue
            }
            if value == nil && !Self.slurmFlags.contains(name) && i < words.count {
                value = words[i]
                i += 1
            }
            take(name, value, at: at)
        }
    }

    /// One Slurm option.
    private mutating func take(_ name: String, _ value: String?, at: String) {
        func ignored(_ why: String) {
            warnings.append("\(at): #SBATCH --\(name)\(value.map { "=\($0)" } ?? ""): \(why)")
        }
        func count(_ v: String?) -> Int? {
            guard let v else { return nil }
            // A range (--nodes 2-4) takes its least.
            return Int(v.split(separator: "-").first.map(String.init) ?? v).flatMap { $0 >= 0 ? $0 : nil }
        }
        func badValue(_ expected: String) {
            slurm.problem = slurm.problem ?? "\(at): #SBATCH --\(name): expected \(expected), got \"\(value ?? "")\""
        }
        switch name {
        case "gres", "gpus-per-node":
            // gpu:2, gpu:a100:2, gpu (one); other resources are not allot's.
            for item in (value ?? "").split(separator: ",") {
                var f = item.split(separator: ":").map(String.init)
                if name == "gres" {
                    guard f.first == "gpu" else {
                        ignored("only GPUs are generic resources allot knows")
                        continue
                    }
                    f.removeFirst()
                }
                guard let (n, model) = Self.gpuCount(f) else { return badValue("GPUs such as 2 or a100:2") }
                slurm.gpusPerNode = n
                if let model { slurm.model = model }
            }
        case "gpus":
            guard let (n, model) = Self.gpuCount((value ?? "").split(separator: ":").map(String.init)) else {
                return badValue("GPUs such as 2 or a100:2")
            }
            slurm.gpus = n
            if let model { slurm.model = model }
        case "nodes":
            guard let n = count(value), n >= 1 else { return badValue("a number of nodes") }
            slurm.nodes = n
        case "time":
            guard let v = value else { return badValue("a time") }
            if ["unlimited", "infinite"].contains(v.lowercased()) { return }
            // A bare number is minutes in Slurm (seconds in allot).
            let text = Int(v) != nil ? v + "m" : v
            guard let s = DurationText.parse(text), s > 0 else {
                return badValue("a time such as 30 (minutes), 1:00:00 or 2-00:00:00")
            }
            arguments += ["--walltime", "\(Int(s))s"]
        case "job-name":
            if let v = value { arguments += ["--name", v] }
        case "output":
            if let v = value { arguments += ["--output", v] }
        case "error":
            ignored("allot writes errors with the output (--output)")
        case "chdir":
            if let v = value {
                arguments += ["--workdir", PathText.absolute(v, in: FileManager.default.currentDirectoryPath)]
            }
        case "dependency":
            if let v = value { arguments += ["--dependency", v] }
        case "account":
            if let v = value { arguments += ["--tenant", v] }
        case "hold":
            arguments.append("--hold")
        case "cpus-per-task":
            guard let n = count(value), n >= 1 else { return badValue("a number of CPUs") }
            slurm.cpusPerTask = n
        case "ntasks":
            guard let n = count(value), n >= 1 else { return badValue("a number of tasks") }
            slurm.tasks = n
        case "mem":
            guard let v = value, let mib = Self.slurmMiB(v) else { return badValue("a size such as 16G or 16000 (MB)") }
            slurm.memoryPerNodeMiB = mib
        case "mem-per-cpu":
            guard let v = value, let mib = Self.slurmMiB(v) else { return badValue("a size such as 4G") }
            slurm.memoryPerCPUMiB = mib
        case "mem-per-gpu":
            guard let v = value, let mib = Self.slurmMiB(v) else { return badValue("a size such as 40G") }
            slurm.memoryPerGPUMiB = mib
        case "array":
            if let v = value { arguments += ["--array", v] }
        case "partition":
            if let v = value { arguments += ["--partition", v] }
        case "nodelist":
            if let v = value { arguments += ["--nodelist", v] }
        case "exclude":
            if let v = value { arguments += ["--exclude", v] }
        case "constraint":
            // Slurm's features are allot's labels: ib&nvme, or a label's value with LABEL=VALUE.
            if let v = value {
                if v.contains("[") || v.contains("(") || v.contains("*") {
                    return badValue("labels joined by & and | (brackets, parentheses and counts are not supported)")
                }
                arguments += ["--constraint", v]
            }
        case "nice":
            // A bare --nice is Slurm's 100.
            arguments += ["--nice", value ?? "100"]
        case "mail-user":
            if let v = value { arguments += ["--mail-user", v] }
        case "mail-type":
            guard let v = value else { return badValue("events such as END,FAIL") }
            // Slurm's types allot does not tell of are named; the others go through.
            func tells(_ word: Substring) -> Bool {
                if case .success = JobNotify.parseEvents(String(word)) { return true }
                return false
            }
            let known = v.split(separator: ",").filter(tells)
            let unknown = v.split(separator: ",").filter { !tells($0) }
            if !unknown.isEmpty {
                warnings.append(
                    "\(at): #SBATCH --mail-type: \(unknown.joined(separator: ",")) not told by allot (it tells begin, end, fail, preempt, requeue); ignored"
                )
            }
            if !known.isEmpty { arguments += ["--mail-type", known.joined(separator: ",")] }
        case "exclusive":
            ignored("allot gives whole GPUs to one job already; a node's other GPUs stay shared")
        default:
            ignored("not an option allot takes over")
        }
    }

    /// `2`, `a100:2`, `` (one): the count and the model, if named.
    static func gpuCount(_ fields: [String]) -> (Int, String?)? {
        switch fields.count {
        case 0: return (1, nil)
        case 1: return Int(fields[0]).map { ($0, nil) } ?? (1, fields[0])
        case 2: return Int(fields[1]).map { ($0, fields[0]) }
        default: return nil
        }
    }

    /// A Slurm size in MiB: a number with K, M (the default), G or T.
    static func slurmMiB(_ text: String) -> Int? {
        let t = text.uppercased()
        let scale: [Character: Double] = ["K": 1.0 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024]
        if let last = t.last, let s = scale[last], let n = Double(t.dropLast()), n > 0 {
            return Int((n * s).rounded(.up))
        }
        if let n = Double(t), n > 0 { return Int(n.rounded(.up)) }
        return nil
    }

    /// Turns what the `#SBATCH` lines said into whole-job options (Slurm's are per node, task or CPU).
    private mutating func finishSlurm() {
        // Before the lines' own options: an #ALLOT line says what allot should do, whatever #SBATCH said.
        let own = arguments
        arguments = []
        defer { arguments += own }
        let nodes = slurm.nodes ?? 1
        let gpus = slurm.gpus ?? slurm.gpusPerNode.map { $0 * nodes }
        if let gpus { arguments += ["--gpus", "\(gpus)"] }
        if let model = slurm.model { arguments += ["--gpu-model", model] }
        let cpus = slurm.cpusPerTask.map { $0 * (slurm.tasks ?? 1) }
        if let cpus { arguments += ["--cpus", "\(cpus)"] }
        if let m = slurm.memoryPerNodeMiB {
            arguments += ["--memory", "\(m * nodes)MiB"]
        } else if let m = slurm.memoryPerCPUMiB, let cpus {
            arguments += ["--memory", "\(m * cpus)MiB"]
        } else if let m = slurm.memoryPerGPUMiB, let gpus, gpus > 0 {
            arguments += ["--memory", "\(m * gpus)MiB"]
        }
        if slurm.memoryPerCPUMiB != nil && cpus == nil {
            warnings.append("#SBATCH --mem-per-cpu without --cpus-per-task: ignored (give --mem or #ALLOT --memory)")
        }
    }
}
