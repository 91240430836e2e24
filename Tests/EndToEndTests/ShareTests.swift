import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Shares of one GPU through the real allotd and allotctl: placed together, run with their share in the
/// environment, priced by their share, kept across a SIGKILL of the daemon.
@Suite(.serialized) struct ShareEndToEndTests {
    /// A job's log once it contains `text` (or as it is after 5 s).
    static func log(_ d: DaemonFixture, _ id: Int, once text: String) -> String {
        var log = ""
        for _ in 0..<50 {
            log = d.ctl(["logs", String(id)]).stdout
            if log.contains(text) { break }
            usleep(100_000)
        }
        return log
    }

    @Test func twoSharesRunOnOneGPUWithTheirShareInTheEnvironment() throws {
        let d = try DaemonFixture()
        let script =
            "echo \"gpus=$CUDA_VISIBLE_DEVICES share=$ALLOT_GPU_SHARE mps=$CUDA_MPS_ACTIVE_THREAD_PERCENTAGE pin=$CUDA_MPS_PINNED_DEVICE_MEM_LIMIT\"; sleep 60"
        let quarter = try d.submit(["--gpus", "0.25", "--kind", "inference", "--", "sh", "-c", script])
        let half = try d.submit(["--gpus", "0.5", "--kind", "inference", "--", "sh", "-c", script])
        try d.wait(quarter, for: "running")
        try d.wait(half, for: "running")
        let a = try #require(d.job(quarter))
        let b = try #require(d.job(half))
        #expect(a["gpu_share"] as? Double == 0.25 && b["gpu_share"] as? Double == 0.5)
        // Inference goes to the cheapest model, and the second share fills the GPU the first one broke.
        #expect(a["node"] as? String == "l1" && b["node"] as? String == "l1")
        let gpuA = (a["gpu_indices"] as? [[String: Any]])?.first?["gpus"] as? [Int]
        let gpuB = (b["gpu_indices"] as? [[String: Any]])?.first?["gpus"] as? [Int]
        #expect(gpuA != nil && gpuA == gpuB, "\(a) \(b)")
        let g = gpuA?.first ?? -1
        var logs = ""
        for _ in 0..<50 {
            logs = d.ctl(["logs", String(quarter)]).stdout + d.ctl(["logs", String(half)]).stdout
            if logs.split(separator: "\n").count >= 2 { break }
            usleep(100_000)
        }
        // MPS holds each to its share, of compute and of the L4's 24 GiB alike: a share that asked only
        // compute cannot take the memory its neighbour was promised.
        #expect(logs.contains("gpus=\(g) share=0.25 mps=25 pin=0=6144M"), "\(logs)")
        #expect(logs.contains("gpus=\(g) share=0.5 mps=50 pin=0=12288M"), "\(logs)")
        // ls shows the share; why says what it shares and what it costs.
        let ls = d.ctl(["ls"]).stdout
        #expect(ls.contains(" 0.25 ") && ls.contains(" 0.5 "), "\(ls)")
        let why = d.ctl(["why", String(quarter)]).stdout
        #expect(why.contains("l1[\(g)]@0.25") && why.contains("0.25 of one L4"), "\(why)")
        #expect(why.contains("shares GPU \(g) of l1 with job \(half)"), "\(why)")
        #expect(d.ctl(["show", String(half)]).stdout.contains("0.5 (a share of one GPU)"))
        // The other L4 is still whole: a whole-GPU inference job gets it, not the shared one.
        let whole = try d.submit(["--kind", "inference", "--gpu-model", "L4", "--", "sleep", "60"])
        try d.wait(whole, for: "running")
        let w = (d.job(whole)?["gpu_indices"] as? [[String: Any]])?.first?["gpus"] as? [Int]
        #expect(w == [1 - g], "\(String(describing: w))")
        // The shares survive a SIGKILL of the daemon: adopted where they ran, the GPU still shared.
        #expect(d.stop(signal: SIGKILL) == 128 + SIGKILL)
        try d.start()
        #expect(d.state(quarter) == "running" && d.state(half) == "running")
        #expect(d.ctl(["why", String(half)]).stdout.contains("shares GPU \(g) of l1 with job \(quarter)"))
        // A share of GPU memory: its MPS memory limit, on the GPU's device 0, and the compute it is priced at
        // (6 GiB of an A100's 80: 0.075, 8% rounded up).
        let mem = try d.submit([
            "--gpu-memory", "6GiB", "--gpu-model", "A100", "--", "sh", "-c",
            "echo \"pin=$CUDA_MPS_PINNED_DEVICE_MEM_LIMIT mps=$CUDA_MPS_ACTIVE_THREAD_PERCENTAGE mib=$ALLOT_GPU_MEMORY_MIB\"; sleep 60",
        ])
        try d.wait(mem, for: "running")
        #expect(d.job(mem)?["gpu_share"] as? Double == 0.075 && d.job(mem)?["gpu_memory_mib"] as? Int == 6144)
        let pin = Self.log(d, mem, once: "pin=")
        #expect(pin.contains("pin=0=6144M mps=8 mib=6144"), "\(pin)")
        // A third share that does not fit beside them waits; one that fits runs at once.
        let big = try d.submit(["--gpus", "0.5", "--gpu-model", "L4", "--kind", "inference", "--", "sleep", "60"])
        let small = try d.submit(["--gpus", "0.2", "--gpu-model", "L4", "--kind", "inference", "--", "sleep", "60"])
        try d.wait(small, for: "running")
        #expect(d.state(big) == "pending")
        // It holds the shared GPU; the small share took only room it will not need.
        let held = d.ctl(["why", String(big)]).stdout
        #expect(held.contains("holds on l1[\(g)]@0.5: expected to start by"), "\(held)")
        #expect(d.ctl(["cancel", String(half)]).status == 0)
        try d.wait(big, for: "running")
        #expect(d.stop() == 0)
        d.killJobs()
    }

    /// What operators read about a shared GPU counts what the shares take: `nodes --gpus` shows the part
    /// of each GPU taken and by whom, `status` counts a GPU lent once however many shares of it are on loan,
    /// `cost` counts a share's GPU-hours as its share, and a running job's run time and cost grow while
    /// nothing else happens in the pool.
    @Test func theSharedGPUIsCountedByWhatItsSharesTake() throws {
        // Another tenant's guarantee makes every GPU root's jobs use a loan.
        let d = try DaemonFixture(pool: DaemonFixture.defaultPool + "\n[[tenant]]\nname = \"team\"\ngpu_quota = 2\n")
        let quarter = try d.submit(["--gpus", "0.25", "--gpu-model", "L4", "--", "sleep", "60"])
        let half = try d.submit(["--gpus", "0.5", "--gpu-model", "L4", "--", "sleep", "60"])
        try d.wait(quarter, for: "running")
        try d.wait(half, for: "running")
        let g = (d.job(quarter)?["gpu_indices"] as? [[String: Any]])?.first?["gpus"] as? [Int]
        #expect(g != nil && g == (d.job(half)?["gpu_indices"] as? [[String: Any]])?.first?["gpus"] as? [Int])
        let gpu = g?.first ?? -1
        let row = d.ctl(["nodes", "--gpus"]).stdout.split(separator: "\n").first {
            $0.hasPrefix("l1 ") && $0.contains("  \(gpu)  ")
        }
        #expect(row?.contains("0.75 (jobs \(quarter),\(half))") == true, "\(String(describing: row))")
        let nodes =
            try JSONSerialization.jsonObject(with: Data(d.ctl(["nodes", "--json"]).stdout.utf8)) as? [[String: Any]]
        let l1 = nodes?.first { $0["name"] as? String == "l1" }
        let listed = (l1?["gpu_list"] as? [[String: Any]])?.first { $0["index"] as? Int == gpu }
        #expect(
            listed?["used"] as? Double == 0.75 && listed?["jobs"] as? [Int] == [quarter, half],
            "\(String(describing: l1))"
        )
        let status =
            try JSONSerialization.jsonObject(with: Data(d.ctl(["status", "--json"]).stdout.utf8)) as? [String: Any]
        let l4 = (status?["gpus"] as? [String: Any])?["L4"] as? [String: Any]
        #expect(l4?["used"] as? Int == 1 && l4?["lent"] as? Int == 1, "\(String(describing: l4))")
        // Nothing happens in the pool for a while: the running share's figures still grow.
        func seen(_ id: Int) -> [String: Any]? {
            let jobs =
                try? JSONSerialization.jsonObject(with: Data(d.ctl(["history", "--json"]).stdout.utf8))
                as? [[String: Any]]
            return jobs?.first { $0["id"] as? Int == id }
        }
        let before = seen(quarter)?["ran_s"] as? Double ?? -1
        usleep(1_500_000)
        let after = seen(quarter)
        let ran = after?["ran_s"] as? Double ?? -1
        #expect(ran >= before + 1.2, "\(before) → \(ran)")
        // GPU-hours: a quarter of the run, in history and in cost alike.
        let hours = after?["gpu_hours"] as? Double ?? -1
        #expect(abs(hours - 0.25 * ran / 3600) < 0.25 * 1.0 / 3600, "\(hours) for \(ran) s")
        let cost =
            try JSONSerialization.jsonObject(with: Data(d.ctl(["cost", "--by", "job", "--json"]).stdout.utf8))
            as? [[String: Any]]
        let billed = cost?.first { $0["key"] as? String == String(quarter) }?["gpu_hours"] as? Double ?? -1
        #expect(billed >= hours && billed < hours + 0.25 * 2.0 / 3600, "\(billed) against \(hours)")
        #expect(d.stop() == 0)
        d.killJobs()
    }

    @Test func cpusAndMemoryAreCountedGivenToTheJobAndLimitedWhereCgroupsAllow() throws {
        var pool = DaemonFixture.defaultPool
        pool = pool.replacingOccurrences(
            of: "name = \"l1\"\ngpu_model = \"L4\"\ngpus = 2\n",
            with: "name = \"l1\"\ngpu_model = \"L4\"\ngpus = 2\ncpus = 8\nmemory_gib = 16\n"
        )
        #expect(pool.contains("cpus = 8"))
        let d = try DaemonFixture(pool: pool)
        let script = "echo \"cpus=$ALLOT_CPUS mib=$ALLOT_MEMORY_MIB\"; sleep 60"
        let j = try d.submit(["--gpu-model", "L4", "--cpus", "2", "--memory", "1GiB", "--", "sh", "-c", script])
        try d.wait(j, for: "running")
        let shown = try #require(d.job(j))
        #expect(shown["cpus"] as? Double == 2 && shown["memory_mib"] as? Int == 1024)
        let slice = (shown["gpu_indices"] as? [[String: Any]])?.first
        #expect(slice?["cpus"] as? Double == 2 && slice?["memory_mib"] as? Int == 1024, "\(shown)")
        #expect(d.ctl(["show", String(j)]).stdout.contains("l1: 2 CPUs, 1 GiB"))
        // `nodes` shows what l1's running jobs hold of what it declares; a1 declares nothing.
        let nodes = d.ctl(["nodes"]).stdout
        #expect(nodes.contains("CPUS USED") && nodes.contains("2/8") && nodes.contains("1/16 GiB"), "\(nodes)")
        let listed =
            try JSONSerialization.jsonObject(with: Data(d.ctl(["nodes", "--json"]).stdout.utf8)) as? [[String: Any]]
        let l1 = listed?.first { $0["name"] as? String == "l1" }
        #expect(l1?["cpus"] as? Double == 8 && l1?["cpus_used"] as? Double == 2, "\(String(describing: l1))")
        #expect(l1?["memory_mib"] as? Int == 16_384 && l1?["memory_used_mib"] as? Int == 1024)
        #expect(listed?.first { $0["name"] as? String == "a1" }?["cpus"] == nil)
        let log = Self.log(d, j, once: "cpus=")
        #expect(log.contains("cpus=2 mib=1024"), "\(log)")
        // Limited by the job's cgroup where cpu and memory are delegated; else its log says it is not.
        if let base = DaemonFixture.jobCgroupBase(stateDir: d.stateDir) {
            let cg = base + "/job-\(j).1"
            if let cpuMax = try? String(contentsOfFile: cg + "/cpu.max", encoding: .utf8) {
                #expect(cpuMax.hasPrefix("200000 100000"), "\(cpuMax)")
                let memoryMax = try? String(contentsOfFile: cg + "/memory.max", encoding: .utf8)
                #expect(memoryMax?.hasPrefix("1073741824") == true)
            } else {
                #expect(log.contains("allot: CPUs not limited: the job's cgroup has no cpu controller"), "\(log)")
            }
        }
        // A 1-GPU job takes half the node by default (4 CPUs, 8 GiB): with 6 CPUs left it fits beside; a
        // job asking for 7 CPUs waits, and one asking for more than the node has is refused at once.
        let waits = try d.submit(["--gpu-model", "L4", "--cpus", "7", "--", "sleep", "60"])
        usleep(500_000)
        #expect(d.state(waits) == "pending")
        let why = d.ctl(["why", String(waits)]).stdout
        #expect(why.contains("waiting for CPUs or memory"), "\(why)")
        let never = d.ctl(["submit", "--gpu-model", "L4", "--memory", "64GiB", "--", "true"])
        #expect(never.status == 1 && never.stderr.contains("can never start"), "\(never.stderr)")
        let bad = d.ctl(["submit", "--memory", "lots", "--", "true"])
        #expect(bad.status == 2 && bad.stderr.contains("--memory"), "\(bad.stderr)")
        // a1 does not declare its CPUs or memory: nothing is counted there, but a job that asks for them gets
        // what it asked for as its own (and as its limit).
        let asked = try d.submit(["--gpu-model", "A100", "--cpus", "3", "--memory", "512MiB", "--", "sh", "-c", script])
        try d.wait(asked, for: "running")
        let askedLog = Self.log(d, asked, once: "cpus=")
        #expect(askedLog.contains("cpus=3 mib=512"), "\(askedLog)")
        #expect(d.ctl(["cancel", String(j)]).status == 0)
        try d.wait(waits, for: "running")
        #expect(d.stop() == 0)
        d.killJobs()
    }

    @Test func badSharesAreRefusedWithTheRule() throws {
        let d = try DaemonFixture()
        for bad in ["1.5", "0.0001", "-0.5"] {
            let r = d.ctl(["submit", "--gpus", bad, "--", "true"])
            #expect(r.status == 2, "\(bad): \(r.stderr)")
            #expect(r.stderr.contains("--gpus") && r.stderr.contains("share of one GPU"), "\(bad): \(r.stderr)")
        }
        // GPU memory without a unit would be MiB: almost surely a slip for GiB, so it is refused.
        let bare = d.ctl(["submit", "--gpu-memory", "10", "--", "true"])
        #expect(bare.status == 2 && bare.stderr.contains("--gpu-memory: \"10\" has no unit"), "\(bare.stderr)")
        // GPU memory is a share of one GPU: a job of no GPU has none (on the command line and in the protocol).
        let none = d.ctl(["submit", "--gpus", "0", "--gpu-memory", "1GiB", "--", "true"])
        #expect(none.status == 2 && none.stderr.contains("a job of --gpus 0 has no GPU"), "\(none.stderr)")
        let noneLine = #"{"command": ["true"], "gpus": 0, "gpu_memory": "1GiB"}"#
        let noneFile = d.ctl(["submit", "--file", "-"], stdin: noneLine + "\n")
        #expect(noneFile.status != 0 && noneFile.stderr.contains("a job of 0 gpus has no GPU"), "\(noneFile.stderr)")
        let line = #"{"command": ["true"], "gpus": 2.5}"#
        let file = d.ctl(["submit", "--file", "-"], stdin: line + "\n")
        #expect(file.status != 0 && file.stderr.contains("gpus"), "\(file.stderr)")
        #expect(d.ctl(["ls", "--all"]).stdout.split(separator: "\n").count == 1)
        // 0 GPUs is a job of CPUs and memory only: it runs, seeing no GPU, and costs no GPU time.
        let cpu = try d.submit(["--gpus", "0", "--", "sh", "-c", "echo \"[$CUDA_VISIBLE_DEVICES]\""])
        try d.wait(cpu, for: "completed")
        // (Its 1 CPU is its limit; where the cpu controller is not delegated its log says so first.)
        #expect(d.ctl(["logs", String(cpu)]).stdout.hasSuffix("[]\n"))
        #expect(d.job(cpu)?["gpus"] as? Int == 0 && d.job(cpu)?["cost_usd"] as? Double == 0)
        // show lists no GPU indices for it (it used to print an empty "l1:").
        let shown = d.ctl(["show", String(cpu)]).stdout
        #expect(shown.contains("gpus         0\n") && !shown.contains("gpu indices"), "\(shown)")
        #expect(d.stop() == 0)
    }
}
