#if canImport(Glibc)
import Glibc
#endif

// allotctl: a plain `submit` is run here (FastSubmit); every other command, and any submit this path does
// not take, is run by allotctl-full, installed next to this binary, with the same arguments.

/// Options of every command given before the command's name (`allotctl --socket S ls`, as systemctl and
/// kubectl allow) moved after it, where the command reads them.
func hoistingGlobalOptions(_ args: [String]) -> [String] {
    var global: [String] = []
    var i = 0
    while i < args.count {
        if args[i] == "--socket", i + 1 < args.count {
            global += [args[i], args[i + 1]]
            i += 2
        } else if args[i].hasPrefix("--socket=") {
            global.append(args[i])
            i += 1
        } else {
            break
        }
    }
    guard !global.isEmpty, i < args.count else { return args }
    return [args[i]] + global + args[(i + 1)...]
}

/// The directory this executable lives in (symbolic links resolved).
func ownDirectory() -> String {
    var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    let n = readlink("/proc/self/exe", &buf, buf.count - 1)
    guard n > 0 else { return "." }
    let path = String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    guard let slash = path.lastIndex(of: "/") else { return "." }
    return slash == path.startIndex ? "/" : String(path[..<slash])
}

let args = hoistingGlobalOptions(Array(CommandLine.arguments.dropFirst()))
if let code = FastSubmit.run(args) { exit(code) }
let full = ownDirectory() + "/allotctl-full"
var argv: [UnsafeMutablePointer<CChar>?] = (["allotctl"] + args).map { strdup($0) }
argv.append(nil)
execv(full, argv)
FastSubmit.say(
    2,
    "allotctl: cannot run \(full): \(String(cString: strerror(errno))); allotctl-full belongs next to allotctl (reinstall allot: make install)\n"
)
exit(1)
