import AllotSim
import Testing

/// The seeded fault simulation, on a fixed set of seeds (`make simulate-faults SEEDS=10000` runs many more).
@Suite struct FaultSimulationTests {
    @Test(arguments: 1...12 as ClosedRange<UInt64>)
    func everyInvariantHoldsUnderFaults(seed: UInt64) throws {
        do {
            let report = try FaultSimulation(seed: seed, steps: 600).run()
            // The faults happened: a run that injected none would prove nothing.
            #expect(report.crashes > 0 && report.starts > 0 && report.events > 100, "\(report.summary)")
        } catch {
            Issue.record("\(error)\nreplay: allotctl simulate-faults --seed \(seed) --steps 600")
        }
    }

    @Test func aSeedReplaysExactly() throws {
        let a = try FaultSimulation(seed: 42, steps: 400).run()
        let b = try FaultSimulation(seed: 42, steps: 400).run()
        #expect(a == b)
        let c = try FaultSimulation(seed: 43, steps: 400).run()
        #expect(a != c)
    }
}
