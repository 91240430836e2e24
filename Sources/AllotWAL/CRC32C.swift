/// CRC-32C (Castagnoli), as iSCSI, ext4 and etcd use it: reflected polynomial 0x82F63B78, initial value and
/// final xor 0xFFFFFFFF. Slicing-by-8 tables; about 1 GB/s in a release build.
public struct CRC32C: Sendable {
    /// The running checksum, before the final xor.
    private var state: UInt32 = 0xFFFF_FFFF

    public init() {}

    /// The checksum of everything fed so far.
    public var value: UInt32 { state ^ 0xFFFF_FFFF }

    /// The checksum of `bytes`.
    public static func checksum(_ bytes: some Collection<UInt8>) -> UInt32 {
        var c = CRC32C()
        c.update(bytes)
        return c.value
    }

    /// Feeds bytes.
    public mutating func update(_ bytes: some Collection<UInt8>) {
        if let done = bytes.withContiguousStorageIfAvailable({ update($0) }) { return done }
        update(Array(bytes))
    }

    /// Feeds bytes from a buffer.
    public mutating func update(_ buffer: UnsafeBufferPointer<UInt8>) {
        guard var p = buffer.baseAddress else { return }
        var n = buffer.count
        var crc = state
        let t = Self.tables
        t.withUnsafeBufferPointer { t in
            while n >= 8 {
                let lo = UInt32(littleEndianBytes: p) ^ crc
                let hi = UInt32(littleEndianBytes: p + 4)
                crc =
                    t[7 * 256 + Int(lo & 0xFF)] ^ t[6 * 256 + Int((lo >> 8) & 0xFF)]
                    ^ t[5 * 256 + Int((lo >> 16) & 0xFF)] ^ t[4 * 256 + Int(lo >> 24)]
                    ^ t[3 * 256 + Int(hi & 0xFF)] ^ t[2 * 256 + Int((hi >> 8) & 0xFF)]
                    ^ t[1 * 256 + Int((hi >> 16) & 0xFF)] ^ t[Int(hi >> 24)]
                p += 8
                n -= 8
            }
            while n > 0 {
                crc = t[Int((crc ^ UInt32(p.pointee)) & 0xFF)] ^ (crc >> 8)
                p += 1
                n -= 1
            }
        }
        state = crc
    }

    /// 8 tables of 256 entries: table k gives the CRC of a byte followed by k zero bytes.
    static let tables: [UInt32] = {
        var t = [UInt32](repeating: 0, count: 8 * 256)
        for i in 0..<256 {
            var c = UInt32(i)
            for _ in 0..<8 { c = c & 1 != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
            t[i] = c
        }
        for i in 0..<256 {
            for k in 1..<8 {
                let prev = t[(k - 1) * 256 + i]
                t[k * 256 + i] = t[Int(prev & 0xFF)] ^ (prev >> 8)
            }
        }
        return t
    }()
}

extension UInt32 {
    @inline(__always) init(littleEndianBytes p: UnsafePointer<UInt8>) {
        self = UInt32(p[0]) | UInt32(p[1]) << 8 | UInt32(p[2]) << 16 | UInt32(p[3]) << 24
    }
}
