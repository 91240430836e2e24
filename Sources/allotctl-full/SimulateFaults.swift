import AllotSim
import ArgumentParser
import Foundation
import Synchronization

struct SimulateFaults: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate-faults",
        abstract: "Run the controller under seeded faults and check what must hold (for developers).",
        discussion: """
            Each seed drives the real controller against a simulated log that loses its unsynced tail in \
            crashes, runners whose jobs exit, fail, hang or ignore SIGTERM, GPUs that fail, agents that are \
            lost and fenced or restart, requests, and a wall clock that steps. After every step it checks the invariants \
            (no GPU held twice, no acknowledged submit lost, one live run per job, a reason for every pending \
            job, the log rebuilding the state). A failure prints its seed; --seed replays it exactly.
            """
    )

    @Option(help: "How many seeds to run, from --first.") var seeds: Int = 100
    @Option(help: "The first seed.") var first: UInt64 = 1
    @Option(help: "Run only this seed (replay a failure).") var seed: UInt64?
    @Option(help: "Steps per seed.") var steps: Int = 2_000

    func run() throws {
        let list = seed.map { [$0] } ?? (0..<UInt64(max(0, seeds))).map { first + $0 }
        let steps = self.steps
        // Seeds are independent: one per core at a time. The first failure (lowest seed) is reported.
        let results = Mutex<(total: FaultSimulation.Report, failures: [UInt64: FaultSimulation.Failure])>(
            (FaultSimulation.Report(), [:])
        )
        let start = Date()
        DispatchQueue.concurrentPerform(iterations: list.count) { i in
            let s = list[i]
            do throws(FaultSimulation.Failure) {
                let r = try FaultSimulation(seed: s, steps: steps).run()
                results.withLock { $0.total = $0.total.adding(r) }
            } catch {
                results.withLock { $0.failures[s] = error }
            }
        }
        let (total, failures) = results.withLock { ($0.total, $0.failures) }
        if let s = failures.keys.min(), let failure = failures[s] {
            FileHandle.standardError.write(Data("allotctl simulate-faults: FAILED at \(failure)\n".utf8))
            FileHandle.standardError.write(
                Data(
                    "replay: allotctl simulate-faults --seed \(s) --steps \(steps)  (\(failures.count) of \(list.count) seeds failed)\n"
                        .utf8
                )
            )
            throw ExitCode(1)
        }
        let took = String(format: "%.1f", Date().timeIntervalSince(start))
        print("\(list.count) seed(s) in \(took) s: \(total.summary); every invariant held")
    }
}
