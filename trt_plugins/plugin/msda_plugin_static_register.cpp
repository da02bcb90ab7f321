// libmdqe_trt_plugin_static.so: registers the creator with TensorRT's global plugin registry when
// the library is loaded (trtexec --staticPlugins, or dlopen/ctypes.CDLL from an application).
#include "msda_plugin.h"

namespace {

struct StaticRegistration {
    StaticRegistration() {
        static mdqe::plugin::MsdaPluginCreator creator;
        if (!getPluginRegistry()->registerCreator(creator, mdqe::plugin::kPluginNamespace)) {
            mdqe::plugin::logError("registering the plugin creator with the global registry failed "
                                   "(already registered?)");
        }
    }
};

const StaticRegistration g_registration;

}  // namespace
