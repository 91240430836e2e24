@_exported import AllotText
