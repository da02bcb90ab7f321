// Entry points of libmdqe_trt_plugin.so for IPluginRegistry::loadLibrary / trtexec --dynamicPlugins.
// This library registers nothing by itself (TensorRT registers what getCreators returns).
#include "msda_plugin.h"

extern "C" {

__attribute__((visibility("default"))) void setLoggerFinder(nvinfer1::ILoggerFinder* finder) {
    mdqe::plugin::setLoggerFinder(finder);
}

__attribute__((visibility("default"))) nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
    static mdqe::plugin::MsdaPluginCreator creator;
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&creator};
    nbCreators = 1;
    return creators;
}

}  // extern "C"
