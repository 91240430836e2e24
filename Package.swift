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
        .library(name: "AllotProtocol", targets: ["AllotProtocol"]),
        .library(name: "AllotDaemon", targets: ["AllotDaemon"]),
        .library(name: "AllotSim", targets: ["AllotSim"]),
        .executable(name: "allotctl", targets: ["allotctl"]),
        .executable(name: "allotctl-full", targets: ["allotctl-full"]),
        .executable(name: "allotd", targets: ["allotd"]),
        .executable(name: "allot-supervise", targets: ["allot-supervise"]),
        // A stand-in libnvidia-ml.so for the tests (GPU discovery through the real dlopen path).
        .library(name: "FakeNVML", type: .dynamic, targets: ["FakeNVML"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.1.0"),
        .package(url: "https://github.com/LebJe/TOMLKit.git", from: "0.6.0"),
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        .package(url: "https://github.com/swiftlang/swift-subprocess.git", from: "1.0.0"),
        .package(url: "https://github.com/apple/swift-system.git", from: "1.4.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.1.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.27.0"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.0.0"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.1.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
    ],
    targets: [
        // The pure model and scheduler: standard library only, no clocks, no I/O.
        // Kinds, topologies, durations and paths as text: what allotctl's lean front needs of the core.
        .target(name: "AllotText", swiftSettings: upcoming),
        .target(name: "AllotCore", dependencies: ["AllotText"], swiftSettings: upcoming),
        // The write-ahead log: segments, snapshots, group commit, recovery (file I/O only).
        .target(name: "AllotWAL", dependencies: ["AllotCore"], swiftSettings: upcoming),
        // The control protocol: JSON-RPC 2.0 messages over a Unix socket, one per line.
        .target(name: "AllotProtocol", dependencies: ["AllotCore"], swiftSettings: upcoming),
        // Starts one run of a job (into its cgroup, as its owner) and stays with it until it ends: C, linked
        // as a static executable, on the path of every job start.
        .executableTarget(name: "allot-supervise", linkerSettings: [.unsafeFlags(["-static-executable"])]),
        // The cluster CA: certificates for the controller and node agents (mutual TLS).
        .target(
            name: "AllotPKI",
            dependencies: [
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            swiftSettings: upcoming
        ),
        // libsystemd (pkg-config libsystemd; Debian's libsystemd-dev).
        .systemLibrary(name: "CSystemd", pkgConfig: "libsystemd", providers: [.apt(["libsystemd-dev"])]),
        // What allotd uses of systemd: notifications, watchdog, socket activation, the journal.
        .target(
            name: "AllotSystemd",
            dependencies: ["CSystemd", .product(name: "Logging", package: "swift-log")],
            swiftSettings: upcoming
        ),
        // The daemon's parts: engine (state owner), control server, executor and supervisor.
        .target(
            name: "AllotDaemon",
            dependencies: [
                "AllotCore", "AllotWAL", "AllotProtocol", "AllotConfig", "AllotSystemd", "AllotEtcd",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                "AllotPKI",
            ],
            swiftSettings: upcoming
        ),
        // The TOML configuration shared by the daemon and the simulator.
        .target(
            name: "AllotConfig",
            dependencies: ["AllotCore", .product(name: "TOMLKit", package: "TOMLKit")],
            swiftSettings: upcoming
        ),
        // etcd's v3 API through its JSON gateway: the store of several controllers (docs/ha.md).
        .target(
            name: "AllotEtcd",
            dependencies: [
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: upcoming
        ),
        // The trace-driven simulator: the real core, virtual time.
        .target(
            name: "AllotSim",
            dependencies: [
                "AllotCore", "AllotConfig", .product(name: "Collections", package: "swift-collections"),
            ],
            swiftSettings: upcoming
        ),
        // allotctl is a small front: it runs a plain `submit` itself (no Foundation, no argument parser: a
        // process starts in about 2 ms instead of 9) and hands everything else to allotctl-full next to it.
        // It is linked as a static executable: no dynamic loader, no relocations at start (1.4 ms instead of
        // 2.7 for an empty program here).
        .executableTarget(
            name: "allotctl",
            dependencies: ["AllotText"],
            swiftSettings: upcoming,
            linkerSettings: [.unsafeFlags(["-static-executable"])]
        ),
        .executableTarget(
            name: "allotctl-full",
            dependencies: [
                "AllotCore", "AllotConfig", "AllotSim", "AllotProtocol", "AllotPKI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: upcoming
        ),
        .executableTarget(
            name: "allotd",
            dependencies: [
                "AllotCore", "AllotWAL", "AllotDaemon", "AllotConfig", "AllotSystemd", "AllotEtcd",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: upcoming
        ),
        .target(name: "FakeNVML", path: "Tests/FakeNVML"),
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
        .testTarget(
            name: "EndToEndTests",
            dependencies: ["AllotCore", "AllotWAL", "AllotProtocol", "AllotEtcd"],
            exclude: ["testdata"],
            swiftSettings: upcoming
        ),
    ]
)
