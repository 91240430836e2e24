import AllotDaemon
import ArgumentParser
import Foundation

// `allotd exec-as` sits between a job's supervisor and the job, on the path of every job start: it is
// handled here, before argument-parser and before the Swift concurrency runtime starts any thread (so
// that switching users does not have to signal other threads, and the job starts a few milliseconds
// sooner). Everything else goes through argument-parser.
let arguments = CommandLine.arguments
if arguments.count > 1, arguments[1] == "exec-as" {
    switch ExecAs.parse(Array(arguments.dropFirst(2))) {
    case .success(let options): exit(ExecAs.run(options))
    case .failure(let message):
        FileHandle.standardError.write(Data("allotd exec-as: \(message)\n".utf8))
        exit(2)
    }
}
// `allotd supervise RUNDIR` starts every job: handled here too, before argument-parser, whose first parse in a
// binary this size costs milliseconds (its dynamic casts scan every protocol conformance linked in).
if arguments.count == 3, arguments[1] == "supervise" {
    exit(await Supervisor.run(directory: arguments[2]))
}
/// In an async function, `main()` is argument-parser's async entry point (top-level code picks the sync one).
func runCommand() async {
    await Allotd.main()
}
await runCommand()
