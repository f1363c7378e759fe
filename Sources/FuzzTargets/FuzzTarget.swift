/// The inputs instancepoller takes from outside, as fuzz targets.
///
/// Each target runs one input and checks properties that must hold for any
/// input, not only that nothing crashed. `scripts/fuzz` drives them with
/// libFuzzer; the test suite replays the committed corpus and every
/// regression input through the same functions.
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// Bytes from a peer, split into ttrpc frames (``FrameDecoder``),
    /// compared with a plain reference reading of the same bytes.
    case frameDecoder = "frame-decoder"
    /// Bytes from a client on a served connection: a shim's provider service
    /// over the fake backend, answering every request frame exactly once.
    case requestDispatch = "request-dispatch"
    /// A fake cloud scenario file.
    case scenario
    /// The controller's config file.
    case config
    /// A vCenter SOAP answer, as `provider-shim vsphere` reads it.
    case vsphereSOAP = "vsphere-soap"
    /// An answer of EC2, STS or the instance metadata service, read by the
    /// ec2 backend (``EC2XMLTarget``; the first byte picks the kind).
    case ec2XML = "ec2-xml"

    /// Runs one input.
    ///
    /// - Throws: ``FuzzPropertyViolation`` when a property does not hold.
    public func run(_ input: [UInt8]) throws(FuzzPropertyViolation) {
        switch self {
        case .frameDecoder: try FrameDecoderTarget.run(input)
        case .requestDispatch: try RequestDispatchTarget.shared.run(input)
        case .scenario: try DocumentTargets.scenario(input)
        case .config: try DocumentTargets.config(input)
        case .vsphereSOAP: try VSphereSOAPTarget.run(input)
        case .ec2XML: try EC2XMLTarget.run(input)
        }
    }
}

/// A property a fuzz target checks did not hold for an input.
public struct FuzzPropertyViolation: Error, CustomStringConvertible, Sendable {
    public var target: FuzzTarget
    public var description: String

    public init(_ target: FuzzTarget, _ description: String) {
        self.target = target
        self.description = "\(target.rawValue): \(description)"
    }
}
