// Everything lives in include/CSystemShims.h as static inline functions;
// SwiftPM needs one source file for a C target.
#include "CSystemShims.h"
