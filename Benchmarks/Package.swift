// swift-tools-version: 6.1
// Benchmarks live in their own package (as swift-nio's do) so that the main build stays fast.
// Run with `make bench` or `swift package benchmark` from this directory.
import Foundation
import PackageDescription

// A path dependency's identity is its directory's name, which depends on where the repository was cloned.
let parent = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
let allot = parent.lastPathComponent.lowercased()

let package = Package(
    name: "allot-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark.git", from: "1.38.0", traits: ["MallocInterposer"]),
    ],
    targets: [
        // The loaded pool both the benchmarks and the pass profile schedule.
        .target(
            name: "BenchmarkPools",
            dependencies: [.product(name: "AllotCore", package: allot)],
            path: "Benchmarks/BenchmarkPools"
        ),
        .executableTarget(
            name: "AllotBenchmarks",
            dependencies: [
                "BenchmarkPools",
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "AllotCore", package: allot),
                .product(name: "AllotConfig", package: allot),
                .product(name: "AllotSim", package: allot),
                .product(name: "AllotWAL", package: allot),
            ],
            path: "Benchmarks/AllotBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        // Times the parts of one scheduling pass, for profiling (swift run -c release PassProfile).
        .executableTarget(
            name: "PassProfile",
            dependencies: ["BenchmarkPools", .product(name: "AllotCore", package: allot)],
            path: "Benchmarks/PassProfile"
        ),
    ]
)
