import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// GPU discovery and health on machines without a GPU: a stand-in libnvidia-ml.so (the FakeNVML target,
/// loaded through allotd's real dlopen path) whose answers the test writes, and a stand-in nvidia-smi that
/// prints output in nvidia-smi's CSV format.
@Suite(.serialized) struct GPUDiscoveryTests {
    static var fakeNVML: String { Harness.binDir.appendingPathComponent("libFakeNVML.so").path }

    static func pool(discover: String = "nvml", declared: String = "") -> String {
        """
        [scheduler]
        default_grace = "1s"
        interval = "1s"

        [[gpu_model]]
        name = "H100"
        memory_gib = 80
        price_per_hour = 3.0
        speed = 1.0

        [[node]]
        name = "g1"
        gpu_model = "H100"
        discover = "\(discover)"
        local = true
        \(declared)

        """
    }

    /// A daemon on a pool of one discovered node, with the fake NVML answering from `nvml`.
    static func fixture(
        nvml: String,
        daemon extra: String = "",
        smi: String = "/nonexistent/nvidia-smi",
        declared: String = ""
    ) throws -> (DaemonFixture, String) {
        let d = try DaemonFixture(
            pool: pool(declared: declared),
            daemon: """
                nvml_library = "\(fakeNVML)"
                nvidia_smi = "\(smi)"
                gpu_check_interval = "0.3s"
                \(extra)
                """,
            start: false
        )
        let file = d.dir.appendingPathComponent("nvml.txt").path
        try nvml.write(toFile: file, atomically: true, encoding: .utf8)
        d.environment = ["FAKE_NVML_FILE": file]
        try d.start()
        return (d, file)
    }

    static let fourH100 = """
        driver 550.54.15
        gpu 0 GPU-00000000-1111-2222-3333-444444444440 81559 NVIDIA H100 80GB HBM3
        gpu 1 GPU-00000000-1111-2222-3333-444444444441 81559 NVIDIA H100 80GB HBM3
        gpu 2 GPU-00000000-1111-2222-3333-444444444442 81559 NVIDIA H100 80GB HBM3
        gpu 3 GPU-00000000-1111-2222-3333-444444444443 81559 NVIDIA H100 80GB HBM3

        """

    /// The stand-in NVML's GPU instances (`gi GPU ID PROFILE START SIZE CI`), from its MIG state file.
    static func migInstances(_ layout: String) -> [String] {
        ((try? String(contentsOfFile: layout, encoding: .utf8)) ?? "").split(separator: "\n").filter {
            $0.hasPrefix("gi ")
        }.map(String.init)
    }

    static func append(_ line: String, to file: String) throws {
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: file))
        h.seekToEndOfFile()
        h.write(Data((line + "\n").utf8))
        try h.close()
    }

    func node(_ d: DaemonFixture) throws -> [String: Any] {
        let r = d.ctl(["nodes", "--json"])
        let nodes = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: Any]]
        return try #require(nodes?.first { $0["name"] as? String == "g1" }, "\(r.stdout) \(r.stderr)")
    }

    func gpu(_ d: DaemonFixture, _ index: Int) throws -> [String: Any] {
        let list = try node(d)["gpu_list"] as? [[String: Any]]
        return try #require(list?.first { $0["index"] as? Int == index })
    }

    /// The GPU indices a job holds on g1.
    func indices(_ d: DaemonFixture, _ j: Int) -> [Int]? {
        let slices = d.job(j)?["gpu_indices"] as? [[String: Any]]
        return slices?.first?["gpus"] as? [Int]
    }

    /// Waits until a condition holds (up to 10 s).
    func eventually(_ what: String, _ condition: () throws -> Bool) throws {
        for _ in 0..<200 {
            if try condition() { return }
            usleep(50_000)
        }
        Issue.record("never happened: \(what)")
    }

    @Test func nvmlFindsTheGPUsAndJobsSeeThemByUUID() throws {
        let (d, _) = try Self.fixture(nvml: Self.fourH100)
        let n = try node(d)
        #expect(n["gpus"] as? Int == 4, "the count comes from NVML, not the config (which gives none)")
        #expect((n["discovery"] as? String)?.contains("nvml (driver 550.54.15)") == true, "\(n)")
        let g2 = try gpu(d, 2)
        #expect(g2["uuid"] as? String == "GPU-00000000-1111-2222-3333-444444444442")
        #expect(g2["name"] as? String == "NVIDIA H100 80GB HBM3")
        #expect(g2["memory_mib"] as? Int == 81559)
        let j = try d.submit(["--gpus", "2", "--", "sh", "-c", "echo $CUDA_VISIBLE_DEVICES; echo $ALLOT_GPU_INDICES"])
        try d.wait(j, for: "completed")
        let lines = d.ctl(["logs", String(j)]).stdout.split(separator: "\n").map(String.init)
        #expect(lines.first == "GPU-00000000-1111-2222-3333-444444444440,GPU-00000000-1111-2222-3333-444444444441")
        #expect(lines.last == "0,1")
        let table = d.ctl(["nodes", "--gpus"]).stdout
        #expect(table.contains("GPU-00000000-1111-2222-3333-444444444443"), "\(table)")
    }

    /// A MIG job on a `mig = "dynamic"` node: allotd makes its instance through NVML (the stand-in grows
    /// the MIG calls and checks NVIDIA's placements), the job sees only its `MIG-` device, the instance
    /// outlives a SIGKILL of allotd with its job, and goes when the job ends.
    @Test func aMIGJobGetsItsOwnInstanceMadeThroughNVMLWhichGoesWhenItEnds() throws {
        let (d, file) = try Self.fixture(
            nvml: Self.fourH100 + "mig 0\nmig 1\nmig 2\nmig 3\n",
            declared: "mig = \"dynamic\""
        )
        let layout = file + ".mig"
        // An instance nobody holds (left by a crash): removed when allotd starts again, below.
        try "mode 3 1\ngi 3 1 0 5 1 1\n".write(toFile: layout, atomically: true, encoding: .utf8)
        func instances() -> [String] { Self.migInstances(layout) }
        let serve = ["--kind", "inference", "--grace", "1s", "--mig", "3g.40gb", "--", "sh", "-c"]
        let a = try d.submit(serve + ["echo $CUDA_VISIBLE_DEVICES; exec sleep 300"])
        try d.wait(a, for: "running")
        let b = try d.submit(serve + ["echo $CUDA_VISIBLE_DEVICES; exec sleep 300"])
        try d.wait(b, for: "running")
        // Both on GPU 0, the broken GPU, one per half; each a GPU instance with its compute instance.
        let slots = [a, b].compactMap { d.job($0)?["mig_instance"] as? String }.sorted()
        #expect(slots == ["3g.40gb@0", "3g.40gb@4"], "\(slots)")
        #expect([a, b].map { indices(d, $0) } == [[0], [0]])
        // `nodes --gpus` shows the instances on each GPU, and whose they are.
        let first = slots[0] == d.job(a)?["mig_instance"] as? String ? (a, b) : (b, a)
        let table = d.ctl(["nodes", "--gpus"]).stdout
        #expect(table.contains("dynamic: 3g.40gb@0 job \(first.0), 3g.40gb@4 job \(first.1)"), "\(table)")
        #expect(try node(d)["mig"] as? String == "dynamic")
        #expect(instances().count == 3 && instances().filter { $0.hasPrefix("gi 0 ") }.count == 2, "\(instances())")
        try eventually("the job printed its device") { d.ctl(["logs", String(a)]).stdout.contains("MIG-") }
        let device = d.ctl(["logs", String(a)]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(device.hasPrefix("MIG-00000000-1111-2222-3333-444444444440-gi"), "\(device)")
        #expect(!device.contains(","), "the job sees its MIG device only: \(device)")
        // A whole-GPU job takes another GPU; GPU 0 is busy for it.
        let whole = try d.submit(["--", "sleep", "300"])
        try d.wait(whole, for: "running")
        #expect(indices(d, whole) != [0])
        // allotd dies: the instances and their jobs stay, and it takes them back.
        _ = d.stop(signal: SIGKILL)
        try d.start()
        try d.wait(a, for: "running")
        #expect(instances().count == 2 && !instances().contains("gi 3 1 0 5 1 1"), "\(instances())")
        #expect(d.daemonLog.contains("MIG instance removed: no job holds it"), "\(d.daemonLog)")
        // The job ends: its instance goes; the other stays.
        #expect(d.ctl(["cancel", String(a)]).status == 0)
        try d.wait(a, for: "cancelled")
        try eventually("the instance was removed") { instances().count == 1 }
        #expect(d.job(b)?["state"] as? String == "running")
        #expect(d.daemonLog.contains("MIG instance removed"), "\(d.daemonLog)")
        _ = d.ctl(["cancel", String(b), String(whole)])
        try eventually("every instance was removed") { instances().isEmpty }
    }

    @Test func aGPUWithAnXIDErrorIsTakenOutAndItsJobRequeuedElsewhere() throws {
        let (d, file) = try Self.fixture(nvml: Self.fourH100)
        let j = try d.submit(["--gpus", "2", "--grace", "1s", "--", "sh", "-c", "sleep 300"])
        try d.wait(j, for: "running")
        #expect(indices(d, j) == [0, 1])
        // An application error (XID 13) is the program's fault: the GPU stays in.
        try Self.append("xid 1 13", to: file)
        usleep(1_000_000)
        #expect(try gpu(d, 1)["health"] as? String == "healthy")
        #expect(d.state(j) == "running")
        // XID 79: the GPU fell off the bus.
        try Self.append("xid 1 79", to: file)
        try eventually("GPU 1 unhealthy") { try gpu(d, 1)["health"] as? String == "unhealthy" }
        #expect((try gpu(d, 1)["reason"] as? String)?.contains("XID 79") == true)
        let table = d.ctl(["nodes"]).stdout
        #expect(table.contains("g1 GPU 1: XID 79 (GPU has fallen off the bus)"), "\(table)")
        // The job is stopped, requeued and runs again on GPUs that are healthy.
        try eventually("job restarted away from GPU 1") {
            d.state(j) == "running" && !(indices(d, j) ?? [1]).contains(1)
        }
        #expect(d.daemonLog.contains("Job requeued"), "\(d.daemonLog.suffix(2000))")
        #expect(d.ctl(["logs", String(j)]).stdout.contains("GPU 1 of node g1 failed"))
        // Uncorrected ECC errors on GPU 2, where it runs now: out again, and it lands on 0 and 3.
        try Self.append("ecc 2 1", to: file)
        try eventually("GPU 2 unhealthy") { try gpu(d, 2)["health"] as? String == "unhealthy" }
        try eventually("job on 0 and 3") { d.state(j) == "running" && indices(d, j) == [0, 3] }
        // A GPU lost from the bus.
        try Self.append("lost 3", to: file)
        try eventually("GPU 3 unhealthy") { try gpu(d, 3)["reason"] as? String == "GPU is lost (fallen off the bus)" }
        try eventually("job waits: one healthy GPU left") { d.state(j) == "pending" }
        // The operator resumes the node: the XID is forgotten, GPU 1 comes back; the job runs on 0 and 1.
        #expect(d.ctl(["resume", "g1"]).status == 0)
        try eventually("GPU 1 healthy again") { try gpu(d, 1)["health"] as? String == "healthy" }
        try eventually("job running on 0 and 1") { d.state(j) == "running" && indices(d, j) == [0, 1] }
        #expect(try gpu(d, 2)["health"] as? String == "unhealthy", "ECC errors are not forgotten by a resume")
    }

    @Test func onGPUFailureFailFailsTheJobWithTheReason() throws {
        let (d, file) = try Self.fixture(nvml: Self.fourH100, daemon: #"on_gpu_failure = "fail""#)
        let j = try d.submit(["--gpus", "4", "--grace", "1s", "--", "sh", "-c", "sleep 300"])
        try d.wait(j, for: "running")
        try Self.append("xid 2 48", to: file)
        try d.wait(j, for: "failed")
        let reason = d.job(j)?["reason"] as? String ?? ""
        #expect(reason.contains("GPU 2 of node g1 failed: XID 48 (double-bit ECC error)"), "\(reason)")
    }

    @Test func withoutNVMLNvidiaSMIIsUsedAndALostGPUIsUnhealthy() throws {
        let smi = try Self.stubNvidiaSMI(printing: "nvidia-smi-4xh100-one-lost.txt")
        defer { try? FileManager.default.removeItem(atPath: smi) }
        let d = try DaemonFixture(
            pool: Self.pool(),
            daemon: """
                nvml_library = "/nonexistent/libnvidia-ml.so.1"
                nvidia_smi = "\(smi)"
                """
        )
        let n = try node(d)
        #expect(n["gpus"] as? Int == 4)
        #expect(n["discovery"] as? String == "nvidia-smi", "\(n)")
        #expect(try gpu(d, 1)["health"] as? String == "unhealthy")
        #expect(try gpu(d, 1)["reason"] as? String == "GPU is lost (fallen off the bus)")
        #expect(try gpu(d, 3)["uuid"] as? String == "GPU-8f6c5d2e-1b3a-4c5d-9e8f-0a1b2c3d4e53")
        #expect(try gpu(d, 3)["health"] as? String == "healthy", "[N/A] ECC counts are not errors")
        let j = try d.submit(["--gpus", "3", "--", "sh", "-c", "echo $ALLOT_GPU_INDICES"])
        try d.wait(j, for: "completed")
        #expect(d.ctl(["logs", String(j)]).stdout == "0,2,3\n")
        #expect(d.daemonLog.contains("nvmlInit") || d.daemonLog.contains("cannot load"), "NVML's failure is logged")
    }

    @Test func nvidiaSMIDiscoveryReadsECCErrors() throws {
        let smi = try Self.stubNvidiaSMI(printing: "nvidia-smi-2xl4-ecc.txt")
        defer { try? FileManager.default.removeItem(atPath: smi) }
        let d = try DaemonFixture(pool: Self.pool(discover: "nvidia-smi"), daemon: #"nvidia_smi = "\#(smi)""#)
        #expect(try node(d)["gpus"] as? Int == 2)
        #expect(try gpu(d, 1)["reason"] as? String == "2 uncorrected ECC errors")
        #expect(try gpu(d, 0)["name"] as? String == "NVIDIA L4")
    }

    @Test func whenNoGPUCanBeFoundTheNodeIsDownSayingWhy() throws {
        let d = try DaemonFixture(
            pool: Self.pool(declared: "gpus = 8"),
            daemon: """
                nvml_library = "/nonexistent/libnvidia-ml.so.1"
                nvidia_smi = "/nonexistent/nvidia-smi"
                """
        )
        let n = try node(d)
        #expect(n["state"] as? String == "down")
        let reason = n["reason"] as? String ?? ""
        #expect(reason.contains("GPU discovery failed") && reason.contains("nvidia-smi"), "\(reason)")
        let j = try d.submit(["--", "true"])
        usleep(300_000)
        #expect(d.state(j) == "pending")
    }

    @Test func nvmlThatFailsToInitialiseIsReportedAndNvidiaSMITakesOver() throws {
        let smi = try Self.stubNvidiaSMI(printing: "nvidia-smi-2xl4-ecc.txt")
        defer { try? FileManager.default.removeItem(atPath: smi) }
        let (d, _) = try Self.fixture(nvml: "init_error 9\n", smi: smi)
        #expect(try node(d)["discovery"] as? String == "nvidia-smi")
        #expect(d.daemonLog.contains("Driver Not Loaded"), "\(d.daemonLog.suffix(1500))")
    }

    /// A script that prints a file of nvidia-smi output (after checking it was asked the right query).
    static func stubNvidiaSMI(printing name: String) throws -> String {
        let data = Harness.root.appendingPathComponent("Tests/EndToEndTests/testdata/\(name)").path
        let path = "/tmp/allot-e2e-smi-\(UUID().uuidString.prefix(8))"
        let script = """
            #!/bin/sh
            case "$1" in --query-gpu=index,uuid,name,memory.total,*) ;; *) echo "unexpected query: $*" >&2; exit 2;; esac
            cat '\(data)'

            """
        try script.write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o755)
        return path
    }
}
