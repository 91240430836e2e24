import AllotCore
import ArgumentParser
import Foundation

@main
struct Allotctl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "allotctl",
        abstract: "Control allot, the GPU pool scheduler.",
        discussion: """
            allotctl talks to allotd over its Unix socket (--socket, or $ALLOT_SOCKET, default \
            /run/allot/allotd.sock), and runs the scheduler offline on job traces (simulate). It waits 60 s for \
            an answer ($ALLOT_TIMEOUT seconds; 0: no limit). Exit codes: 0 success, 1 refused or failed, 2 usage \
            error, 3 not found, 4 permission denied, 69 allotd unreachable or not answering.
            """,
        version: "0.1.0",
        subcommands: [
            Submit.self, Run.self, Alloc.self, List.self, History.self, Show.self, Why.self, Cancel.self, Hold.self,
            Release.self,
            Requeue.self, Checkpoint.self, Update.self, Logs.self,
            Wait.self,
            Watch.self,
            Nodes.self, Drain.self, Resume.self, Status.self, Top.self, Cost.self, Reload.self, Simulate.self,
            SimulateFaults.self, CA.self, ServiceCommand.self,
        ]
    )

    /// The full command, run by the `allotctl` front for everything but a plain submit (see FastSubmit).
    /// argument-parser exits 64 on usage errors; allotctl's documented code is 2.
    static func main() async {
        let args = Array(CommandLine.arguments.dropFirst())
        // The front (allotctl) has moved options given before the command after it.
        if let first = args.first, !first.hasPrefix("-"), first != "help" {
            let names = configuration.subcommands.map { $0._commandName }
            if !names.contains(first) {
                let hint = closest(first, in: names).map { "; did you mean \"\($0)\"?" } ?? ""
                FileHandle.standardError.write(
                    Data("allotctl: unknown command \"\(first)\"\(hint) (allotctl --help lists them)\n".utf8)
                )
                Foundation.exit(2)
            }
        }
        do {
            var command = try parseAsRoot(args)
            if var c = command as? any AsyncParsableCommand {
                try await c.run()
            } else {
                try command.run()
            }
        } catch {
            if exitCode(for: error) == .validationFailure {
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                Foundation.exit(2)
            }
            exit(withError: error)
        }
    }
}
