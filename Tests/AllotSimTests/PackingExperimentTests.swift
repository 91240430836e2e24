import AllotCore
import Foundation
import Testing

@testable import AllotSim

/// The openb reader and FGD's experiment on a small generated pool.
@Suite struct PackingExperimentTests {
    static let nodes = """
        sn,cpu_milli,memory_mib,gpu,model
        n0,32000,262144,2,T4
        n1,96000,786432,8,V100M32
        n2,64000,262144,0,

        n3,64000,524288,4,T4
        """

    static let pods = """
        name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec
        p0,4000,8192,1,500,
        p1,8000,16384,1,1000,
        p2,0,0,0,0,
        p3,16000,65536,8,0,V100M32
        p4,2000,4096,1,250,T4|A10
        p5,2000,4096,2,1000,
        """

    @Test func readsNodesAndPodsAsTheTraceWritesThem() throws {
        let t = try OpenbTrace.parse(nodes: Self.nodes, nodesName: "nodes.csv", pods: Self.pods, podsName: "pods.csv")
        // The CPU-only node holds no GPU: it is left out.
        #expect(t.nodes.map(\.name) == ["n0", "n1", "n3"])
        #expect(t.models == ["T4", "V100M32"])
        #expect(t.gpus == 14)
        #expect(t.pods.count == 6)
        // 0 milli-GPUs of whole GPUs mean whole GPUs; no CPU or memory means Kubernetes' defaults.
        #expect(t.pods[3].gpuMilli == 1000 && t.pods[3].gpus == 8)
        #expect(t.pods[2].cpuMilli == 100 && t.pods[2].memoryMiB == 200 && t.pods[2].gpus == 0)
        // gpu_spec limits the models; a model the pool lacks (A10) is simply not one of them.
        #expect(t.request(t.pods[4]).models == 1 << 0)
        #expect(t.request(t.pods[3]).models == 1 << 1)
        #expect(t.request(t.pods[0]).models == ~0)
        #expect(t.request(t.pods[0]) == ResourceRequest(gpus: 1, gpuMilli: 500, cpuMilli: 4000, memoryMiB: 8192))
    }

    @Test func errorsNameTheFileLineAndColumn() {
        func error(nodes: String = Self.nodes, pods: String = Self.pods) -> String {
            do {
                _ = try OpenbTrace.parse(nodes: nodes, nodesName: "nodes.csv", pods: pods, podsName: "pods.csv")
                return "no error"
            } catch { return "\(error)" }
        }
        #expect(
            error(pods: "name,cpu_milli,memory_mib,num_gpu\np0,1,1,1\n").hasPrefix(
                "pods.csv:1: the header has no column \"gpu_milli\""
            )
        )
        // Line numbers count blank lines too.
        #expect(
            error(nodes: Self.nodes.replacingOccurrences(of: "n3,64000", with: "n3,lots"))
                == "nodes.csv:6: column cpu_milli: \"lots\" is not a whole number"
        )
        #expect(
            error(pods: Self.pods.replacingOccurrences(of: "p1,8000,16384,1,1000", with: "p1,8000,16384,1,1500"))
                == "pods.csv:3: column gpu_milli: 1500 is outside 0...1000"
        )
        #expect(
            error(pods: Self.pods.replacingOccurrences(of: "p5,2000,4096,2", with: "p5,2000,4096,-2")).hasPrefix(
                "pods.csv:7: column num_gpu"
            )
        )
        #expect(error(nodes: "\n") == "nodes.csv: the file is empty or its first line (the header) is blank")
        #expect(error(nodes: "sn,cpu_milli,memory_mib,gpu,model\nc0,1000,1000,0,\n") == "nodes.csv: no node with GPUs")
        #expect(error(pods: "name,cpu_milli,memory_mib,num_gpu,gpu_milli\n") == "pods.csv: no pods")
    }

    @Test(arguments: FractionPool.Rule.allCases)
    func theExperimentRecordsEveryPercentAndIsRepeatable(rule: FractionPool.Rule) throws {
        let t = try OpenbTrace.parse(nodes: Self.nodes, nodesName: "nodes.csv", pods: Self.pods, podsName: "pods.csv")
        let e = PackingExperiment(trace: t)
        let run = e.run(rule: rule, seed: 7)
        #expect(run.allocation.count == 131 && run.fragmentation.count == 131)
        #expect(run.allocation.first == 0)
        // Pods never leave: the allocation only grows, and never beyond the arrived demand or the pool.
        for k in 1..<run.allocation.count { #expect(run.allocation[k] >= run.allocation[k - 1]) }
        #expect(run.allocation.allSatisfy { $0 <= 100 })
        #expect(run.allocation.last! > 0)
        #expect(run.fragmentation.allSatisfy { $0 >= 0 && $0 <= 100.000_1 })
        #expect(run.placed + run.failed == run.arrived)
        // The arrived pods carry 130% of the pool's GPU demand, give or take the last pod.
        let arrived = e.arrivals(seed: 7)
        let demand = arrived.reduce(0) { $0 + $1.gpus * $1.gpuMilli }
        #expect(demand <= 14 * 1300 && demand > 14 * 1300 - 8000)
        #expect(e.run(rule: rule, seed: 7) == run)
        #expect(e.arrivals(seed: 8) != arrived)
    }
}
