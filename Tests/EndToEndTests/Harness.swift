import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Runs the project's real binaries.
enum Harness {
    /// The package root, found from this file.
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// The directory holding the built products: next to the test bundle, or `$ALLOT_BIN_DIR`.
    static var binDir: URL {
        if let dir = ProcessInfo.processInfo.environment["ALLOT_BIN_DIR"] { return URL(fileURLWithPath: dir) }
        var url = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        while url.path != "/" {
            url.deleteLastPathComponent()
            if FileManager.default.isExecutableFile(atPath: url.appendingPathComponent("allotctl").path) { return url }
        }
        return root.appendingPathComponent(".build/debug")
    }

    /// A directory any user may enter, holding copies of the binaries that tests run as other users
    /// (`allotctl`): the checkout itself may sit in a directory only its owner can enter (root's 0700 home),
    /// where `runuser -u alice` could not execute `.build/…/allotctl`. Made once per test run, removed at exit.
    /// - Throws: a ``FixtureError`` saying what could not be set up, for the test that needed it.
    static func binDirForOtherUsers() throws -> URL {
        try sharedBinaries.withLock { made in
            if let made { return try made.get() }
            let result = Result { try makeSharedBinaries() }
            made = result
            return try result.get()
        }
    }

    private static let sharedBinaries = Mutex<Result<URL, any Error>?>(nil)

    private static func makeSharedBinaries() throws -> URL {
        let dir = URL(fileURLWithPath: "/tmp/allot-e2e-bin-\(getpid())-\(UUID().uuidString.prefix(6))")
        do {
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: false)
            guard chmod(dir.path, 0o755) == 0 else { throw FixtureError("chmod 755 \(dir.path) failed") }
            for name in ["allotctl", "allotctl-full"] {
                let from = binDir.appendingPathComponent(name)
                let to = dir.appendingPathComponent(name)
                // A hard link where both sit on one file system (no copy of a 100 MB debug binary); a copy
                // elsewhere. Either way the file itself is readable and executable by all.
                if link(from.path, to.path) != 0 { try FileManager.default.copyItem(at: from, to: to) }
                guard chmod(to.path, 0o755) == 0 else { throw FixtureError("chmod 755 \(to.path) failed") }
            }
        } catch {
            try? FileManager.default.removeItem(at: dir)
            throw FixtureError(
                "cannot set up the binaries that tests run as other users in \(dir.path) (copied from \(binDir.path), "
                    + "which other users may not be able to reach): \(error)"
            )
        }
        atexit { Harness.removeSharedBinaries() }
        return dir
    }

    private static func removeSharedBinaries() {
        if case .success(let dir)? = sharedBinaries.withLock({ $0 }) { try? FileManager.default.removeItem(at: dir) }
    }

    struct Output {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs a product with arguments, from the package root (or `directory`), and waits for it.
    static func run(
        _ product: String,
        _ args: [String],
        environment: [String: String] = [:],
        stdin: String? = nil,
        absolute: Bool = false,
        directory: URL? = nil
    ) throws -> Output {
        let p = Process()
        p.executableURL = absolute ? URL(fileURLWithPath: product) : binDir.appendingPathComponent(product)
        p.arguments = args
        p.currentDirectoryURL = directory ?? root
        var env = ProcessInfo.processInfo.environment
        env["COLUMNS"] = "100"
        for (k, v) in environment { env[k] = v }
        p.environment = env
        let out = Pipe()
        let err = Pipe()
        p.standardOutput = out
        p.standardError = err
        let input = Pipe()
        p.standardInput = stdin == nil ? FileHandle.nullDevice : input
        try p.run()
        if let stdin {
            // Feed standard input from another thread: the child may answer before reading it all.
            let data = Data(stdin.utf8)
            let writer = input.fileHandleForWriting
            Thread.detachNewThread {
                writer.write(data)
                try? writer.close()
            }
        }
        // Read both pipes before waiting so a chatty child cannot block on a full pipe.
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Output(
            status: p.terminationStatus,
            stdout: String(decoding: o, as: UTF8.self),
            stderr: String(decoding: e, as: UTF8.self)
        )
    }

    /// A fresh temporary directory, removed after `body`.
    static func withTempDir<T>(_ body: (URL) throws -> T) throws -> T {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("allot-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        return try body(dir)
    }
}
