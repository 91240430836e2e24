// Times the pieces of one scheduling pass on the benchmark pool (for profiling; not a benchmark suite).
import AllotCore
import BenchmarkPools
import Foundation

let clock = ContinuousClock()
func ms(_ d: Duration) -> String {
    String(format: "%.2f ms", Double(d.components.attoseconds) / 1e15 + Double(d.components.seconds) * 1000)
}
let state = loadedPool(nodes: 1024, pending: 100_000, seed: 2)
let s = Scheduler()
for _ in 0..<3 {
    var t = clock.now
    let ranked = s.rankedPending(state, at: state.now)
    let rank = clock.now - t
    t = clock.now
    let pass = s.schedule(state, at: state.now)
    let total = clock.now - t
    print(
        "rank \(ms(rank)), pass \(ms(total)); \(ranked.count) ranked, \(pass.decisions.count) decisions, reservation \(pass.reservation != nil), free after \(state.freePool.totalFreeGPUs)"
    )
}
