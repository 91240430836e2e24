/// Appends the WAL's binary encoding (docs/wal-format.md) to a byte buffer.
struct BinaryWriter {
    var bytes: [UInt8]

    init(capacity: Int = 256) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    @inline(__always) mutating func u8(_ v: UInt8) { bytes.append(v) }
    @inline(__always) mutating func u16(_ v: UInt16) {
        bytes.append(UInt8(truncatingIfNeeded: v))
        bytes.append(UInt8(truncatingIfNeeded: v >> 8))
    }
    @inline(__always) mutating func u32(_ v: UInt32) {
        for s in stride(from: 0, to: 32, by: 8) { bytes.append(UInt8(truncatingIfNeeded: v >> UInt32(s))) }
    }
    @inline(__always) mutating func u64(_ v: UInt64) {
        for s in stride(from: 0, to: 64, by: 8) { bytes.append(UInt8(truncatingIfNeeded: v >> UInt64(s))) }
    }
    @inline(__always) mutating func f64(_ v: Double) { u64(v.bitPattern) }
    @inline(__always) mutating func bool(_ v: Bool) { bytes.append(v ? 1 : 0) }

    mutating func uvar(_ v: UInt64) {
        var v = v
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }
    @inline(__always) mutating func uvar(_ v: Int) { uvar(UInt64(max(0, v))) }
    mutating func ivar(_ v: Int64) { uvar(UInt64(bitPattern: (v << 1) ^ (v >> 63))) }

    mutating func string(_ s: String) {
        var s = s
        s.withUTF8 { buf in
            uvar(buf.count)
            bytes.append(contentsOf: buf)
        }
    }

    mutating func optional<T>(_ v: T?, _ body: (inout BinaryWriter, T) -> Void) {
        if let v {
            u8(1)
            body(&self, v)
        } else {
            u8(0)
        }
    }

    mutating func array<T>(_ a: [T], _ body: (inout BinaryWriter, T) -> Void) {
        uvar(a.count)
        for e in a { body(&self, e) }
    }

    mutating func stringMap(_ m: [String: String]) {
        uvar(m.count)
        for k in m.keys.sorted() {
            string(k)
            string(m[k]!)
        }
    }
}

/// A problem decoding bytes: what was expected and where.
struct DecodeError: Error, CustomStringConvertible {
    var offset: Int
    var message: String
    var description: String { "\(message) at payload byte \(offset)" }
}

/// Reads the WAL's binary encoding.
struct BinaryReader {
    let bytes: UnsafeRawBufferPointer
    var offset: Int
    /// The schema version the bytes were written with: fields added later are absent from older ones.
    var version: UInt16

    init(_ bytes: UnsafeRawBufferPointer, offset: Int = 0, version: UInt16 = EventCodec.version) {
        self.bytes = bytes
        self.offset = offset
        self.version = version
    }

    var remaining: Int { bytes.count - offset }

    @inline(__always) private mutating func need(_ n: Int) throws(DecodeError) {
        if n > remaining {
            throw DecodeError(offset: offset, message: "truncated: \(n) more bytes expected, \(remaining) left")
        }
    }

    @inline(__always) mutating func u8() throws(DecodeError) -> UInt8 {
        try need(1)
        defer { offset += 1 }
        return bytes[offset]
    }
    @inline(__always) mutating func u16() throws(DecodeError) -> UInt16 {
        try need(2)
        defer { offset += 2 }
        return UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8
    }
    @inline(__always) mutating func u32() throws(DecodeError) -> UInt32 {
        try need(4)
        defer { offset += 4 }
        return bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self).littleEndian
    }
    @inline(__always) mutating func u64() throws(DecodeError) -> UInt64 {
        try need(8)
        defer { offset += 8 }
        return bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self).littleEndian
    }
    @inline(__always) mutating func f64() throws(DecodeError) -> Double { Double(bitPattern: try u64()) }
    mutating func bool() throws(DecodeError) -> Bool {
        let v = try u8()
        guard v <= 1 else { throw DecodeError(offset: offset - 1, message: "boolean is \(v), not 0 or 1") }
        return v == 1
    }

    mutating func uvar() throws(DecodeError) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            let b = try u8()
            if shift == 63 && b > 1 {
                throw DecodeError(offset: offset - 1, message: "variable-length integer overflows 64 bits")
            }
            result |= UInt64(b & 0x7F) << shift
            if b & 0x80 == 0 { return result }
            shift += 7
            if shift > 63 { throw DecodeError(offset: offset, message: "variable-length integer is too long") }
        }
    }

    /// A count or index that must fit comfortably in memory.
    mutating func count(max: Int = 1 << 24) throws(DecodeError) -> Int {
        let v = try uvar()
        guard v <= UInt64(max) else { throw DecodeError(offset: offset, message: "count \(v) exceeds \(max)") }
        return Int(v)
    }

    mutating func ivar() throws(DecodeError) -> Int64 {
        let u = try uvar()
        return Int64(bitPattern: (u >> 1) ^ (0 &- (u & 1)))
    }

    mutating func string() throws(DecodeError) -> String {
        let n = try count()
        try need(n)
        defer { offset += n }
        return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + n)]), as: UTF8.self)
    }

    mutating func optional<T>(_ body: (inout BinaryReader) throws(DecodeError) -> T) throws(DecodeError) -> T? {
        switch try u8() {
        case 0: return nil
        case 1: return try body(&self)
        case let v: throw DecodeError(offset: offset - 1, message: "optional marker is \(v), not 0 or 1")
        }
    }

    mutating func array<T>(_ body: (inout BinaryReader) throws(DecodeError) -> T) throws(DecodeError) -> [T] {
        let n = try count()
        var out: [T] = []
        out.reserveCapacity(min(n, 4096))
        for _ in 0..<n { out.append(try body(&self)) }
        return out
    }

    mutating func stringMap() throws(DecodeError) -> [String: String] {
        let n = try count()
        var out: [String: String] = [:]
        for _ in 0..<n {
            let k = try string()
            out[k] = try string()
        }
        return out
    }

    /// An enum stored as a u8 index into `cases`.
    mutating func enumeration<T>(_ cases: [T], _ what: String) throws(DecodeError) -> T {
        let v = try u8()
        guard Int(v) < cases.count else { throw DecodeError(offset: offset - 1, message: "unknown \(what) \(v)") }
        return cases[Int(v)]
    }
}

extension Array where Element == UInt8 {
    /// `withUnsafeBytes` that keeps the body's error type (the standard one rethrows `any Error`).
    func withBytes<T, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> T) throws(E) -> T {
        let result: Result<T, E> = withUnsafeBytes { b in
            do throws(E) { return .success(try body(b)) } catch { return .failure(error) }
        }
        return try result.get()
    }
}
