import AllotCore
import AllotProtocol
import ArgumentParser
import Foundation

struct Submit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Submit a job (a command, a batch script, or many from a JSON-lines file) and print its id.",
        discussion: """
            The command follows the options, after `--`: allotctl submit --gpus 8 -- python train.py --lr 3e-4. \
            Or give a batch script and its arguments, as to sbatch: allotctl submit train.sh --lr 3e-4. Its options \
            come from `#ALLOT --gpus 2` lines (this command's options) and `#SBATCH` lines (Slurm's: --gres=gpu:N, \
            -G, -t, -J, -o, -D, -d, -a, -A, -p, -c, -n, -N, --mem, --mem-per-cpu, --mem-per-gpu, --hold; a warning names \
            each one not taken over) at its top, before the first line that is not a comment; options given here \
            win. The job runs a copy of the script taken now. \
            It runs as you, in --workdir (default: the current directory), with CUDA_VISIBLE_DEVICES set to its \
            GPUs. With --file, each line is a JSON object with the same names in snake_case plus "command" (an \
            array of strings). Options given with --file are defaults for every line: a line's own keys win, \
            and --env merges with a line's "env". Blank lines and lines starting with # are skipped; an unknown \
            key or a trailing comma is an error naming the line, and then nothing is submitted. Lines are sent \
            in batches of up to 5,000 jobs (and 512 KiB), each batch all or nothing. \
            Durations: 90s, 15m, 2h, 1d, 1h30m, Slurm's 1:30:00 and 2-00:00:00, or plain seconds.
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @Option(
        name: [.customShort("G"), .customLong("gpus")],
        parsing: .unconditional,
        help: ArgumentHelp(
            "GPUs the job needs (default 1), a share of one GPU below 1 (0.25 shares a GPU with other shares), 0 for a job of CPUs and memory only (default --cpus 1), or a range for an elastic training job (4-16: it starts with what is free, at least 4, grows into idle GPUs and shrinks rather than stop; see --gpus-step).",
            valueName: "N|0.F|MIN-MAX"
        )
    )
    var gpuRequest: GPURequest?

    /// The GPUs (an elastic job's fewest).
    var gpus: Double? { gpuRequest?.amount }

    @Option(
        name: .customLong("gpus-step"),
        help: ArgumentHelp(
            "An elastic job's sizes go up from its fewest GPUs by this many (default 1): --gpus 4-16 --gpus-step 4 runs on 4, 8, 12 or 16.",
            valueName: "N"
        )
    )
    var gpusStep: Int?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "CPUs for the whole job (default: a share of each node's CPUs in proportion to its GPUs).",
            valueName: "N"
        )
    )
    var cpus: Double?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Memory for the whole job, e.g. 64GiB or 512MiB (default: a share of each node's memory in proportion to its GPUs).",
            valueName: "SIZE"
        )
    )
    var memory: String?

    @Option(
        name: .customLong("gpu-memory"),
        help: ArgumentHelp(
            "For a share of one GPU: the GPU memory it takes, e.g. 10GiB (with or without --gpus 0.F; priced by the larger share).",
            valueName: "SIZE"
        )
    )
    var gpuMemory: String?

    @Option(
        name: .customLong("mig"),
        help: ArgumentHelp(
            "A MIG instance instead of GPUs: acceptable profiles, cheapest first, e.g. 1g.10gb or 1g.10gb,2g.20gb (on nodes with mig = dynamic or static; `allotctl nodes --gpus` shows their instances).",
            valueName: "PROFILE[,…]"
        )
    )
    var mig: String?

    @Option(
        name: .customLong("gpu-model"),
        help: ArgumentHelp("Allowed GPU models, separated by commas.", valueName: "M[,M…]")
    )
    var gpuModel: String?

    @Option(name: .customLong("min-gpu-memory"), help: ArgumentHelp("Least memory per GPU.", valueName: "GiB"))
    var minGPUMemory: Double?

    @Option(name: .long, help: ArgumentHelp("training (default) or inference.", valueName: "KIND"))
    var kind: String?

    @Option(name: .customLong("class"), help: ArgumentHelp("Priority class (default: by kind).", valueName: "NAME"))
    var priorityClass: String?

    @Option(
        name: [.customShort("A"), .long],
        help: ArgumentHelp("Tenant to charge (default: your user name).", valueName: "T")
    )
    var tenant: String?

    @Option(name: .long, help: ArgumentHelp("Run time limit: the job is stopped when it is reached.", valueName: "DUR"))
    var walltime: String?

    @Option(
        name: .customShort("t"),
        help: ArgumentHelp(
            "The walltime as Slurm's -t reads it: a bare number is minutes (30, 30:00, 1:00:00, 2-00:00:00).",
            valueName: "TIME"
        )
    )
    var slurmTime: String?

    /// The walltime asked for, by --walltime or -t.
    var walltimeSeconds: Seconds? {
        if let walltime { return DurationText.parse(walltime) }
        guard let t = slurmTime else { return nil }
        return DurationText.parse(Int(t) != nil ? t + "m" : t)
    }

    @Option(
        name: .long,
        help: ArgumentHelp("Expected run time, for pricing and backfill (default: walltime).", valueName: "DUR")
    )
    var estimate: String?

    @Option(
        name: .long,
        help: ArgumentHelp("Time between SIGTERM and SIGKILL when the job is stopped.", valueName: "DUR")
    )
    var grace: String?

    @Flag(inversion: .prefixedNo, help: "Whether the job may be preempted (default: by its class).")
    var preemptible: Bool?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "A training job's own speed on GPU models, on the scale of the pool's model speeds, for an application that gains more or less from a model than the pool's figure: --speed A100=4.4,T4=1 (models not named keep theirs).",
            valueName: "MODEL=X,…"
        )
    )
    var speed: String?

    @Option(
        name: .customLong("max-cost"),
        help: ArgumentHelp("Do not start where the estimated cost is higher.", valueName: "USD")
    )
    var maxCost: Double?

    @Option(name: .long, help: ArgumentHelp("cheapest, fastest or deadline:<RFC 3339 time>.", valueName: "P"))
    var prefer: String?

    @Option(name: .long, help: ArgumentHelp("any (default), single-node or nvlink.", valueName: "T"))
    var topology: String?

    @Option(
        name: [.customShort("J"), .long],
        help: ArgumentHelp("The job's name (default: the command's name).", valueName: "N")
    )
    var name: String?

    @Option(
        name: [.customShort("d"), .long],
        help: ArgumentHelp(
            "Start only after other jobs, as Slurm's: afterok:ID[:ID…] (they completed), afterany (they ended), afternotok (they failed or were cancelled), after (they started), singleton (your earlier jobs of this name ended); join conditions with commas.",
            valueName: "COND[,…]"
        )
    )
    var dependency: String?

    @Option(
        name: [.customShort("a"), .long],
        help: ArgumentHelp(
            "A job array: one task per index, as Slurm's: 0-999, 0-999:2 (a step), 1,3,5-7; with %10, at most 10 tasks at once. Tasks see ALLOT_ARRAY_JOB_ID and ALLOT_ARRAY_TASK_ID (and SLURM_ARRAY_*); `cancel ID` cancels them all, `cancel ID_7` one.",
            valueName: "INDICES[%N]"
        )
    )
    var array: String?

    @Option(
        name: [.customShort("p"), .long],
        help: ArgumentHelp(
            "Slurm's partition: the priority class of that name, else the tenant of that name (unless --class or --tenant is given); otherwise ignored with a warning.",
            valueName: "NAME"
        )
    )
    var partition: String?

    @Option(
        name: [.customShort("w"), .long],
        help: ArgumentHelp("Run only on these nodes: names or hostlists (gpu[01-04],big1).", valueName: "NODES")
    )
    var nodelist: String?

    @Option(
        name: [.customShort("x"), .long],
        help: ArgumentHelp("Never run on these nodes: names or hostlists.", valueName: "NODES")
    )
    var exclude: String?

    @Option(
        name: [.customShort("C"), .long],
        help: ArgumentHelp(
            "Run only on nodes whose labels satisfy this: LABEL, LABEL=VALUE, LABEL!=VALUE, !LABEL, joined by & (and) and | (or).",
            valueName: "EXPR"
        )
    )
    var constraint: String?

    @Option(
        name: .long,
        parsing: .unconditional,
        help: ArgumentHelp(
            "Points off the job's priority score (Slurm's nice); negative values raise it (admins only).",
            valueName: "N"
        )
    )
    var nice: Int?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "POST a JSON record to this http:// URL when the job begins, ends, fails or is preempted (retried until it answers 2xx).",
            valueName: "URL"
        )
    )
    var notify: String?

    @Option(
        name: .customLong("mail-user"),
        help: ArgumentHelp("Mail this address of the same moments (through the local sendmail).", valueName: "ADDR")
    )
    var mailUser: String?

    @Option(
        name: .customLong("mail-type"),
        help: ArgumentHelp(
            "Which moments to tell of: begin, end, fail, preempt, requeue, all or none, joined by commas (default begin,end,fail,preempt).",
            valueName: "LIST"
        )
    )
    var mailType: String?

    @Option(
        name: [.customShort("D"), .long],
        help: ArgumentHelp("Working directory (default: the current one).", valueName: "DIR")
    )
    var workdir: String?

    @Option(
        name: [.customShort("o"), .long],
        help: ArgumentHelp(
            "Write the job's output and errors to this file, opened as you (default: a log kept by allotd; see `allotctl logs`).",
            valueName: "PATH"
        )
    )
    var output: String?

    @Option(name: .long, help: ArgumentHelp("An environment variable for the job (repeatable).", valueName: "K=V"))
    var env: [String] = []

    @Flag(name: .long, help: "Submit held: it waits until `allotctl release`.")
    var hold = false

    @Option(
        name: .long,
        help: ArgumentHelp("Submit the jobs of a JSON-lines file (- for standard input).", valueName: "FILE")
    )
    var file: String?

    @Flag(name: .long, help: "Print {\"id\": N} (or {\"ids\": […]}) instead of bare ids.")
    var json = false

    @Option(
        name: .customLong("request-id"),
        help: ArgumentHelp(
            "Your id of this submit (up to 128 characters): submitted again with the same id, it is answered with the job(s) the first made, never new ones. With it, allotctl retries by itself for 20 s when the connection is lost before the answer (e.g. while another controller takes over).",
            valueName: "ID"
        )
    )
    var requestID: String?

    @Argument(
        parsing: .captureForPassthrough,
        help: ArgumentHelp(
            "The command and its arguments after --, or a batch script and its arguments.",
            valueName: "-- CMD | SCRIPT"
        )
    )
    var rest: [String] = []

    static let optionNames = [
        "gpus", "cpus", "memory", "gpu-memory", "mig", "gpu-model", "min-gpu-memory", "kind", "class", "tenant",
        "walltime", "estimate", "grace", "preemptible", "no-preemptible", "max-cost", "prefer", "topology", "name",
        "dependency", "array", "partition", "workdir", "output", "env", "hold", "file", "json", "socket",
        "nodelist", "exclude", "constraint", "nice", "notify", "mail-user", "mail-type",
    ]

    /// The command given after `--`.
    var command: [String] { rest.first == "--" ? Array(rest.dropFirst()) : [] }
    /// The batch script given instead, and its arguments.
    var script: (path: String, args: [String])? {
        guard let first = rest.first, first != "--" else { return nil }
        return (first, Array(rest.dropFirst()))
    }

    func validate() throws {
        // What follows the options is taken whole (a script's arguments may look like options), so an
        // unknown option ends up here: say so, as the parser would.
        if let first = rest.first, first != "--", first.hasPrefix("-") {
            if first == "--help" || first == "-h" { throw CleanExit.helpRequest(self) }
            let name = String(first.drop { $0 == "-" }.prefix { $0 != "=" })
            let hint = closest(name, in: Self.optionNames).map { " (did you mean --\($0)?)" } ?? ""
            throw ValidationError("unknown option \"\(first)\"\(hint); see allotctl submit --help")
        }
        if file == nil && rest.isEmpty {
            throw ValidationError(
                "give the job's command after --, e.g. allotctl submit --gpus 2 -- python train.py; a batch script (allotctl submit job.sh); or --file FILE"
            )
        }
        if file == nil && rest == ["--"] {
            throw ValidationError("give the job's command after --, e.g. allotctl submit --gpus 2 -- python train.py")
        }
        if file != nil && !rest.isEmpty {
            throw ValidationError("give either --file or a command, not both")
        }
        if let gpus, case .failure(let problem) = Fraction.gpuAmount(gpus) {
            throw ValidationError("--gpus: \(problem.message)")
        }
        if let most = gpuRequest?.most, let fewest = gpus, !(fewest >= 1 && most > Int(fewest)) {
            throw ValidationError(
                "--gpus: an elastic job's range goes from its fewest GPUs (at least 1) to more, e.g. 4-16, not \(Int(fewest))-\(most)"
            )
        }
        if gpusStep != nil && gpuRequest?.most == nil {
            throw ValidationError("--gpus-step is for an elastic job, whose --gpus is a range such as 4-16")
        }
        if let cpus, !(cpus.isFinite && cpus >= 0.001) {
            throw ValidationError("--cpus: expected CPUs above 0 (e.g. 4 or 0.5), got \(cpus)")
        }
        if let gpuMemory, Fraction.mebibytes(parsing: gpuMemory) == nil {
            throw ValidationError("--gpu-memory: expected a size above 0 such as 10GiB or 512MiB, got \"\(gpuMemory)\"")
        }
        // A bare number would be MiB (as --memory reads Slurm's --mem), which for a GPU's memory is almost
        // always a slip for GiB: ask for the unit.
        if let gpuMemory, Double(gpuMemory.trimmingCharacters(in: .whitespaces)) != nil {
            throw ValidationError(
                "--gpu-memory: \"\(gpuMemory)\" has no unit; write \(gpuMemory)GiB or \(gpuMemory)MiB"
            )
        }
        if gpuMemory != nil, gpus == 0 {
            throw ValidationError("--gpu-memory is the GPU memory of a share of one GPU; a job of --gpus 0 has no GPU")
        }
        if gpuMemory != nil, let gpus, gpus > 1 {
            throw ValidationError(
                "--gpu-memory is the GPU memory of a share of one GPU; for \(Int(gpus)) GPUs with at least some memory each, use --min-gpu-memory"
            )
        }
        if let mig {
            let names = mig.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            if names.isEmpty || names.contains(where: { MIGSlot(parsing: $0 + "@0") == nil }) {
                throw ValidationError("--mig: expected MIG profiles such as 1g.10gb or 1g.10gb,2g.20gb, got \"\(mig)\"")
            }
            if gpuMemory != nil || (gpus ?? 1) != 1 {
                throw ValidationError(
                    "--mig asks for one MIG instance: it takes no --gpus other than 1, and no --gpu-memory"
                )
            }
        }
        if let memory, Fraction.mebibytes(parsing: memory) == nil {
            throw ValidationError("--memory: expected a size above 0 such as 64GiB or 512MiB, got \"\(memory)\"")
        }
        if let kind, JobKind(rawValue: kind) == nil {
            throw ValidationError("--kind: expected training or inference, got \"\(kind)\"")
        }
        if walltime != nil && slurmTime != nil { throw ValidationError("give --walltime or -t, not both") }
        if let t = slurmTime, walltimeSeconds == nil {
            throw ValidationError("-t: \"\(t)\" is not a time; use e.g. 30 (minutes), 30:00, 1:00:00 or 2-00:00:00")
        }
        for (flag, value) in [("--walltime", walltime), ("--estimate", estimate), ("--grace", grace)] {
            if let v = value, DurationText.parse(v) == nil {
                throw ValidationError(
                    "\(flag): \"\(v)\" is not a duration; use e.g. 90s, 15m, 2h, 1d, 1:30:00 or 2-00:00:00"
                )
            }
        }
        for e in env where !e.contains("=") || e.hasPrefix("=") {
            throw ValidationError("--env: expected K=V, got \"\(e)\"")
        }
        if let a = array, case .failure(let e) = ArrayIndices.parse(a) {
            throw ValidationError("--array: \(e.message)")
        }
        if let d = dependency, case .failure(let e) = Dependency.parse(d) {
            throw ValidationError("--dependency: \(e.message)")
        }
        if let t = topology, Topology(rawValue: t) == nil {
            throw ValidationError("--topology: expected any, single-node or nvlink, got \"\(t)\"")
        }
        if case .failure(let e) = NodeSelection.parse(nodelist: nodelist, exclude: exclude, constraint: constraint) {
            throw ValidationError(e.message)
        }
        if let t = mailType, case .failure(let e) = JobNotify.parseEvents(t) {
            throw ValidationError("--mail-type: \(e.message)")
        }
        if let u = notify, WebhookURL(u) == nil {
            throw ValidationError("--notify: \"\(u)\" is not an http:// URL (http://HOST[:PORT]/PATH)")
        }
    }

    /// The request the flags describe (also the defaults under each --file line); `defaultWorkdir`: the
    /// current directory when none is given.
    func request(defaultWorkdir: Bool = true) -> JobRequest {
        var r = JobRequest()
        r.command = command.isEmpty ? nil : command
        r.name = name
        r.gpus = gpus
        r.maxGPUs = gpuRequest?.most
        r.gpuStep = gpusStep
        r.cpus = cpus
        r.memory = memory.map(WireMemory.init)
        r.gpuMemory = gpuMemory.map(WireMemory.init)
        r.mig = mig.map { WireModels($0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }) }
        r.gpuModel = gpuModel.map { WireModels($0.split(separator: ",").map(String.init)) }
        r.minGPUMemory = minGPUMemory
        r.kind = kind
        r.priorityClass = priorityClass
        r.tenant = tenant
        r.walltime = walltimeSeconds.map(WireDuration.init)
        r.estimate = estimate.flatMap(DurationText.parse).map(WireDuration.init)
        r.grace = grace.flatMap(DurationText.parse).map(WireDuration.init)
        r.preemptible = preemptible
        r.maxCost = maxCost
        r.speed = speed.map(WireSpeeds.init)
        r.prefer = prefer
        r.topology = topology
        let here = FileManager.default.currentDirectoryPath
        r.workdir = workdir ?? (defaultWorkdir ? here : nil)
        r.output = output.map { PathText.absolute($0, in: r.workdir ?? here) }
        if !env.isEmpty {
            var e: [String: String] = [:]
            for kv in env {
                let i = kv.firstIndex(of: "=")!
                e[String(kv[..<i])] = String(kv[kv.index(after: i)...])
            }
            r.env = e
        }
        r.hold = hold ? true : nil
        r.dependency = dependency
        r.array = array
        r.partition = partition
        r.nodelist = nodelist
        r.exclude = exclude
        r.constraint = constraint
        r.nice = nice
        r.notify = notify
        r.mailUser = mailUser
        r.mailType = mailType
        return r
    }

    func run() throws {
        if let file { return try submitFile(file) }
        if let script { return try send(try scriptRequest(script.path, args: script.args)) }
        try send(request())
    }

    /// The request for a batch script: its lines' options under the command line's.
    func scriptRequest(_ path: String, args: [String]) throws -> JobRequest {
        let parsed: BatchScript
        do {
            parsed = try BatchScript.read(path)
        } catch {
            throw fail(error.message, code: Exit.usage)
        }
        for w in parsed.warnings { warn("warning: \(w)") }
        let fromScript: Submit
        do {
            fromScript = try Submit.parse(parsed.arguments + ["--", "true"])
        } catch {
            throw fail(
                "\(path): its #ALLOT or #SBATCH lines: \(Submit.message(for: error).split(separator: "\n").first ?? "")",
                code: Exit.usage
            )
        }
        var r = request(defaultWorkdir: false).filled(from: fromScript.request(defaultWorkdir: false))
        // Relative paths are taken against the working directory the job ends up with.
        r.workdir = r.workdir ?? FileManager.default.currentDirectoryPath
        r.output = (output ?? fromScript.output).map { PathText.absolute($0, in: r.workdir!) }
        let name = URL(fileURLWithPath: path).lastPathComponent
        r.name = r.name ?? name
        r.command = parsed.command(name: name, args: args)
        return r
    }

    func send(_ request: JobRequest) throws {
        // With a request id, sending again is safe: allotd answers with the job the first try made, if it did.
        let retryUntil = Date().addingTimeInterval(requestID == nil ? 0 : 20)
        try talking {
            while true {
                do {
                    let client = try connection.connect()
                    let result: SubmitResult = try client.call(
                        Methods.submit,
                        SubmitParams(job: request, requestID: requestID)
                    )
                    for w in result.warnings ?? [] { warn("warning: \(w)") }
                    if json { try printJSON(result) } else { out("\(result.id)\n") }
                    return
                } catch let e as ExitCode where e.rawValue == Exit.unreachable && Date() < retryUntil {
                    usleep(250_000)
                } catch let e as RPCError
                    where e.code == RPCError.unavailable && e.message.contains("no controller leads")
                    && Date() < retryUntil
                {
                    usleep(250_000)
                }
            }
        }
    }

    /// Reads a JSON-lines file and submits it in pipelined batches.
    func submitFile(_ path: String) throws {
        let data: Data
        if path == "-" {
            data = FileHandle.standardInput.readDataToEndOfFile()
        } else {
            guard let d = FileManager.default.contents(atPath: path) else {
                throw fail("cannot read \(path)", code: Exit.usage)
            }
            data = d
        }
        let defaults = request()
        var jobs: [JobRequest] = []
        var lineNumbers: [Int] = []
        var lineBytes: [Int] = []
        do {
            for (lineNo, bytes, r) in try JobLines.parse(data) {
                jobs.append(r.filled(from: defaults))
                lineNumbers.append(lineNo)
                lineBytes.append(bytes)
            }
        } catch {
            throw fail("\(path):\(error.line): \(error.message)", code: Exit.usage)
        }
        guard !jobs.isEmpty else { throw fail("\(path) holds no jobs", code: Exit.usage) }
        var ids: [UInt64] = []
        ids.reserveCapacity(jobs.count)
        let batches = Self.batches(lineBytes: lineBytes, defaults: defaults)
        try talking {
            let client = try connection.connect()
            var inflight: [Range<Int>] = []
            var next = 0
            var sent = 0
            var firstError: RPCError?
            var notSubmitted = 0
            while next < jobs.count || !inflight.isEmpty {
                while firstError == nil && sent < batches.count && inflight.count < 4 {
                    let range = batches[sent]
                    // One id per batch: the same file sent again with the same --request-id makes nothing twice.
                    let id = requestID.map { batches.count > 1 ? "\($0)#\(sent)" : $0 }
                    try client.send(Methods.submitMany, SubmitManyParams(jobs: Array(jobs[range]), requestID: id))
                    inflight.append(range)
                    next = range.upperBound
                    sent += 1
                }
                if inflight.isEmpty { break }
                let range = inflight.removeFirst()
                do {
                    let r: SubmitManyResult = try client.result()
                    ids.append(contentsOf: r.ids)
                    for w in r.warnings ?? [] { warn("warning: \(w)") }
                } catch let e as RPCError {
                    notSubmitted += range.count
                    guard firstError == nil else { continue }
                    // Name the file's line: the daemon names the index in the batch.
                    var message = e.message
                    if message.hasPrefix("jobs["), let close = message.firstIndex(of: "]"),
                        let i = Int(message[message.index(message.startIndex, offsetBy: 5)..<close])
                    {
                        let rest = message[message.index(after: close)...].drop { $0 == ":" || $0 == " " }
                        message = "\(path):\(lineNumbers[range.lowerBound + i]): \(rest)"
                    }
                    firstError = RPCError(e.code, message)
                }
            }
            if let e = firstError {
                notSubmitted += jobs.count - next
                if !ids.isEmpty { out(ids.map(String.init).joined(separator: "\n") + "\n") }
                throw RPCError(
                    e.code,
                    e.message + " (\(ids.count) job(s) were submitted, their ids printed; \(notSubmitted) were not)"
                )
            }
        }
        if json {
            try printJSON(SubmitManyResult(ids: ids))
        } else {
            out(ids.map(String.init).joined(separator: "\n") + "\n")
        }
    }

    /// The jobs of a file in batches of at most 5,000 jobs and about 512 KiB (half of allotd's default
    /// `max_message_bytes`: a job's request is about its line plus what the command line fills in), so that
    /// long lines never make a request allotd refuses as too long.
    static func batches(lineBytes: [Int], defaults: JobRequest) -> [Range<Int>] {
        let filled = (try? JSONEncoder().encode(defaults).count) ?? 0
        var out: [Range<Int>] = []
        var start = 0
        var bytes = 0
        for (i, line) in lineBytes.enumerated() {
            let size = line + filled
            if i > start && (i - start == 5_000 || bytes + size > 512 << 10) {
                out.append(start..<i)
                (start, bytes) = (i, 0)
            }
            bytes += size
        }
        if start < lineBytes.count { out.append(start..<lineBytes.count) }
        return out
    }

}

/// The lines of a `submit --file`: one JSON object per line; blank lines and lines starting with `#` are
/// skipped. Strict where JSON parsers are lenient: an unknown key or a trailing comma is an error, since a
/// job that runs with a dropped key (`"gpu": 2` run on one GPU) is worse than one that does not run.
enum JobLines {
    struct Problem: Error {
        let line: Int
        let message: String
    }

    /// Each job line's number (from 1), length in bytes and request.
    static func parse(_ data: Data) throws(Problem) -> [(line: Int, bytes: Int, request: JobRequest)] {
        let decoder = JSONDecoder()
        var out: [(line: Int, bytes: Int, request: JobRequest)] = []
        var lineNo = 0
        for line in data.split(separator: 10, omittingEmptySubsequences: false) {
            lineNo += 1
            guard let first = line.first(where: { $0 != 32 && $0 != 9 && $0 != 13 }), first != UInt8(ascii: "#")
            else { continue }
            if let column = trailingComma(in: line) {
                throw Problem(line: lineNo, message: "a trailing comma at column \(column) (JSON allows none)")
            }
            do {
                out.append((lineNo, line.count, try decoder.decode(JobRequest.self, from: Data(line))))
            } catch let e as JobRequest.UnknownKey {
                throw Problem(line: lineNo, message: e.description)
            } catch DecodingError.typeMismatch(_, let c) where c.codingPath.isEmpty {
                throw Problem(
                    line: lineNo,
                    message: "expected a JSON object, e.g. {\"command\": [\"python\", \"train.py\"]}"
                )
            } catch {
                throw Problem(line: lineNo, message: "not a job request: \(describe(error))")
            }
        }
        return out
    }

    /// The 1-based column of a comma that closes nothing (`,}` or `,]`, blanks between), outside strings.
    static func trailingComma(in line: some Collection<UInt8>) -> Int? {
        var inString = false
        var escaped = false
        var comma: Int?
        for (i, b) in line.enumerated() {
            if inString {
                if escaped {
                    escaped = false
                } else if b == UInt8(ascii: "\\") {
                    escaped = true
                } else if b == UInt8(ascii: "\"") {
                    inString = false
                }
                continue
            }
            switch b {
            case 32, 9, 13: continue
            case UInt8(ascii: ","): comma = i + 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                if let comma { return comma }
                comma = nil
            case UInt8(ascii: "\""):
                inString = true
                comma = nil
            default: comma = nil
            }
        }
        return nil
    }

    static func describe(_ error: any Error) -> String {
        guard let e = error as? DecodingError else { return "\(error)" }
        switch e {
        case .keyNotFound(let k, _): return "\"\(k.stringValue)\" is missing"
        case .typeMismatch(_, let c), .valueNotFound(_, let c):
            return "\"\(c.codingPath.map(\.stringValue).joined(separator: "."))\" has the wrong type"
        case .dataCorrupted(let c):
            let at = c.codingPath.map(\.stringValue).joined(separator: ".")
            return at.isEmpty ? "not valid JSON" : "\"\(at)\": \(c.debugDescription)"
        @unknown default: return "\(error)"
        }
    }
}

extension JobRequest {
    /// This line's request with the command line's flags as defaults: what the line names wins; `env`
    /// merges, the line's variables winning; relative output paths are taken against the line's workdir.
    func filled(from d: JobRequest) -> JobRequest {
        var r = self
        r.name = name ?? d.name
        if gpus == nil {
            r.gpus = d.gpus
            r.maxGPUs = maxGPUs ?? d.maxGPUs
        }
        r.gpuStep = gpuStep ?? d.gpuStep
        r.cpus = cpus ?? d.cpus
        r.memory = memory ?? d.memory
        r.gpuMemory = gpuMemory ?? d.gpuMemory
        r.gpuModel = gpuModel ?? d.gpuModel
        r.minGPUMemory = minGPUMemory ?? d.minGPUMemory
        r.kind = kind ?? d.kind
        r.priorityClass = priorityClass ?? d.priorityClass
        r.tenant = tenant ?? d.tenant
        r.walltime = walltime ?? d.walltime
        r.estimate = estimate ?? d.estimate
        r.grace = grace ?? d.grace
        r.preemptible = preemptible ?? d.preemptible
        r.maxCost = maxCost ?? d.maxCost
        r.speed = speed ?? d.speed
        r.prefer = prefer ?? d.prefer
        r.topology = topology ?? d.topology
        r.workdir = workdir ?? d.workdir
        r.output = output.map { PathText.absolute($0, in: r.workdir ?? "/") } ?? d.output
        if let de = d.env { r.env = de.merging(env ?? [:]) { _, line in line } }
        r.hold = hold ?? d.hold
        r.dependency = dependency ?? d.dependency
        r.array = array ?? d.array
        r.partition = partition ?? d.partition
        r.nodelist = nodelist ?? d.nodelist
        r.exclude = exclude ?? d.exclude
        r.constraint = constraint ?? d.constraint
        r.nice = nice ?? d.nice
        r.notify = notify ?? d.notify
        r.mailUser = mailUser ?? d.mailUser
        r.mailType = mailType ?? d.mailType
        return r
    }
}

/// `--gpus`: a number of GPUs (or a share of one), or an elastic job's range `MIN-MAX`.
struct GPURequest: ExpressibleByArgument, Hashable {
    var amount: Double
    /// An elastic job's most GPUs.
    var most: Int?

    init?(argument: String) {
        let parts = argument.split(separator: "-", omittingEmptySubsequences: false)
        if parts.count == 2, !parts[0].isEmpty {
            // A range; checked in validate(), which names what is wrong.
            guard let fewest = Int(parts[0]), let most = Int(parts[1]) else { return nil }
            amount = Double(fewest)
            self.most = most
        } else {
            guard let n = Double(argument), n.isFinite else { return nil }
            amount = n
            most = nil
        }
    }
}
