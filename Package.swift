// swift-tools-version: 6.2
import PackageDescription

let upcoming: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "allot",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "AllotCore", targets: ["AllotCore"]),
        .library(name: "AllotConfig", targets: ["AllotConfig"]),
        .library(name: "AllotWAL", targets: ["AllotWAL"]),
        .library(name: "AllotSim", targets: ["AllotSim"]),
        .executable(name: "allotctl", targets: ["allotctl"]),
        .executable(name: "allotd", targets: ["allotd"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.1.0"),
        .package(url: "https://github.com/LebJe/TOMLKit.git", from: "0.6.0"),
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.0"),
    ],
    targets: [
        // The pure model and scheduler: standard library only, no clocks, no I/O.
        .target(name: "AllotCore", swiftSettings: upcoming),
        // The write-ahead log: segments, snapshots, group commit, recovery (file I/O only).
        .target(name: "AllotWAL", dependencies: ["AllotCore"], swiftSettings: upcoming),
        // The TOML configuration shared by the daemon and the simulator.
        .target(
            name: "AllotConfig",
            dependencies: ["AllotCore", .product(name: "TOMLKit", package: "TOMLKit")],
            swiftSettings: upcoming
        ),
        // The trace-driven simulator: the real core, virtual time.
        .target(
            name: "AllotSim",
            dependencies: ["AllotCore", .product(name: "Collections", package: "swift-collections")],
            swiftSettings: upcoming
        ),
        .executableTarget(
            name: "allotctl",
            dependencies: [
                "AllotCore", "AllotConfig", "AllotSim",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: upcoming
        ),
        .executableTarget(
            name: "allotd",
            dependencies: [
                "AllotCore", "AllotWAL",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: upcoming
        ),
        .testTarget(
            name: "AllotCoreTests",
            dependencies: ["AllotCore", .product(name: "PropertyBased", package: "swift-property-based")],
            swiftSettings: upcoming
        ),
        .testTarget(
            name: "AllotWALTests",
            dependencies: ["AllotWAL", .product(name: "PropertyBased", package: "swift-property-based")],
            resources: [.copy("testdata")],
            swiftSettings: upcoming
        ),
        .testTarget(name: "AllotConfigTests", dependencies: ["AllotConfig"], swiftSettings: upcoming),
        .testTarget(
            name: "AllotSimTests",
            dependencies: [
                "AllotSim", "AllotConfig", .product(name: "PropertyBased", package: "swift-property-based"),
            ],
            swiftSettings: upcoming
        ),
        .testTarget(name: "EndToEndTests", dependencies: ["AllotCore", "AllotWAL"], swiftSettings: upcoming),
    ]
)
