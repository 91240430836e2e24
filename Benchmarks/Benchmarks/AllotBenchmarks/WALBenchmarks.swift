import AllotCore
import AllotWAL
import Benchmark
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A temporary directory on the same disk as the repository (not /tmp, which may be a RAM disk elsewhere).
func benchDirectory(_ name: String) -> String {
    let base = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent(".build/bench-data").path
    let dir = base + "/" + name + "-\(getpid())"
    try? FileManager.default.removeItem(atPath: dir)
    try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

func submit(_ id: UInt64) -> Event {
    Event(
        time: Instant(seconds: 1_800_000_000 + Double(id)),
        .jobSubmitted(
            id: JobID(id),
            spec: JobSpec(
                name: "bench-\(id)",
                tenant: "t\(id % 7)",
                uid: 1000,
                gpus: 1,
                command: ["python3", "train.py"]
            ),
            held: false
        )
    )
}

/// Writes a log of `jobs` jobs × (submit, start, finish) on a 1,024-node pool, with no snapshot.
func makeReplayLog(_ dir: String, jobs: Int) -> Int {
    var options = WriteAheadLog.Options()
    options.sync = .never
    let (log, _) = try! WriteAheadLog.open(directory: dir, options: options)
    let models = [GPUModel(name: "H100", memoryGiB: 80, pricePerHour: 4, speed: 2)]
    var events = [Event(time: Instant(seconds: 1_800_000_000), .configApplied(config: PoolConfig(gpuModels: models)))]
    for n in 0..<1024 {
        events.append(
            Event(
                time: Instant(seconds: 1_800_000_000),
                .nodeAdded(spec: NodeSpec(name: "n\(n)", gpuModel: "H100", gpus: 8))
            )
        )
    }
    try! log.appendBlocking(events)
    var count = events.count
    for i in 1...jobs {
        let id = UInt64(i)
        let t = Instant(seconds: 1_800_000_000 + Double(i))
        let alloc = Allocation(model: "H100", slices: [.init(node: "n\(i % 1024)", gpus: [(i / 1024) % 8])])
        try! log.appendBlocking([
            submit(id),
            Event(time: t, .jobStarted(id: JobID(id), allocation: alloc)),
            Event(time: t + 60, .jobFinished(id: JobID(id), exit: .exited(code: 0))),
        ])
        count += 3
    }
    log.close()
    return count
}

let walBenchmarks: @Sendable () -> Void = {
    Benchmark(
        "WAL: raw fsync rate of this disk (pwrite 64 B + fdatasync)",
        configuration: .init(
            metrics: [.wallClock, .throughput],
            warmupIterations: 10,
            maxDuration: .seconds(5),
            maxIterations: 2000
        )
    ) { benchmark in
        let dir = benchDirectory("fsync")
        let fd = open(dir + "/probe", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        let bytes = [UInt8](repeating: 7, count: 64)
        var offset = 0
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            _ = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, 64, off_t(offset)) }
            fdatasync(fd)
            offset += 64
        }
        benchmark.stopMeasurement()
        close(fd)
        try? FileManager.default.removeItem(atPath: dir)
    }

    for writers in [1, 16, 256] {
        let perIteration = max(256, writers * 16)
        Benchmark(
            "WAL: durable appends, batch (group commit), \(writers) writer(s), \(perIteration) appends per iteration",
            configuration: .init(
                metrics: [.wallClock, .custom("durable appends/s", polarity: .prefersLarger, useScalingFactor: false)],
                warmupIterations: 1,
                maxDuration: .seconds(8),
                maxIterations: 40
            )
        ) { benchmark in
            let dir = benchDirectory("group-\(writers)")
            let (log, _) = try! WriteAheadLog.open(directory: dir, options: WriteAheadLog.Options())
            let next = IDs()
            let clock = ContinuousClock()
            for _ in benchmark.scaledIterations {
                let began = clock.now
                benchmark.startMeasurement()
                await withTaskGroup(of: Void.self) { group in
                    for _ in 0..<writers {
                        group.addTask {
                            for _ in 0..<(perIteration / writers) {
                                let ticket = next.enqueue(log)
                                _ = try! await log.waitDurable(ticket)
                            }
                        }
                    }
                }
                benchmark.stopMeasurement()
                let seconds =
                    Double((clock.now - began).components.attoseconds) / 1e18
                    + Double((clock.now - began).components.seconds)
                benchmark.measurement(
                    .custom("durable appends/s", polarity: .prefersLarger, useScalingFactor: false),
                    Int(Double(perIteration) / seconds)
                )
            }
            log.close()
            try? FileManager.default.removeItem(atPath: dir)
        }
    }

    Benchmark(
        "WAL: recover 1,000,000 records (open to ready, no snapshot)",
        configuration: .init(
            metrics: [
                .wallClock, .peakMemoryResident,
                .custom("records/s", polarity: .prefersLarger, useScalingFactor: false),
            ],
            warmupIterations: 0,
            maxDuration: .seconds(30),
            maxIterations: 3
        )
    ) { benchmark in
        let dir = benchDirectory("replay")
        let records = makeReplayLog(dir, jobs: 333_000)
        let clock = ContinuousClock()
        let began = clock.now
        benchmark.startMeasurement()
        let (log, report) = try! WriteAheadLog.open(directory: dir, options: WriteAheadLog.Options())
        benchmark.stopMeasurement()
        let elapsed = clock.now - began
        log.close()
        precondition(report.lastLSN == UInt64(records))
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        benchmark.measurement(
            .custom("records/s", polarity: .prefersLarger, useScalingFactor: false),
            Int(Double(records) / seconds)
        )
        // ALLOT_KEEP_BENCH_DATA=1 keeps the log for profiling (`allotd wal verify DIR` replays it).
        if ProcessInfo.processInfo.environment["ALLOT_KEEP_BENCH_DATA"] != "1" {
            try? FileManager.default.removeItem(atPath: dir)
        }
    }
}

/// Hands out job ids and enqueues in id order, as the daemon's single state owner does.
final class IDs: @unchecked Sendable {
    private let lock = NSLock()
    private var next: UInt64 = 1
    func enqueue(_ log: WriteAheadLog) -> WriteAheadLog.Ticket {
        lock.lock()
        defer { lock.unlock() }
        let t = try! log.enqueue([submit(next)])
        next += 1
        return t
    }
}
