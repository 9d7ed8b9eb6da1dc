// AWS IoT control-plane errors. AWS IoT speaks `rest-json`: an error is an HTTP status,
// an `x-amzn-ErrorType` header naming the error shape, and a JSON body with `message`.
// The status of each shape is the one in the IoT service model (service-2.json), so the
// aws CLI and the SDKs map our errors to the same exception classes as AWS's.

const STATUS = {
  AccessDeniedException: 403,
  CertificateConflictException: 409,
  CertificateStateException: 406,
  CertificateValidationException: 400,
  DeleteConflictException: 409,
  InternalFailureException: 500,
  InvalidRequestException: 400,
  LimitExceededException: 410,
  MalformedPolicyException: 400,
  RegistrationCodeValidationException: 400,
  RequestEntityTooLargeException: 413, // data plane (iot-data service model)
  ResourceAlreadyExistsException: 409,
  ResourceNotFoundException: 404,
  SqlParseException: 400,
  UnauthorizedException: 401,
  UnknownOperationException: 404,
  VersionConflictException: 409
};

export class AwsError extends Error {
  /**
   * @param {string} type  error shape name, e.g. 'ResourceNotFoundException'
   * @param {string} message human readable text, printed by the CLI
   * @param {object} [extra] additional body members (e.g. resourceId, resourceArn)
   */
  constructor (type, message, extra = {}) {
    super(message);
    this.type = type;
    this.status = STATUS[type] || 400;
    this.extra = extra;
  }

  body () {
    return { message: this.message, ...this.extra };
  }
}

export const notFound = (what) => new AwsError('ResourceNotFoundException', what);
export const invalid = (what) => new AwsError('InvalidRequestException', what);
