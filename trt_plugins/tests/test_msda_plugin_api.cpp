// Loads libmdqe_trt_plugin.so the way TensorRT does (dlopen + getCreators + setLoggerFinder) and
// drives every plugin method that needs no GPU: identity, fields, serialization round trip,
// output types, format rules, shape checks, clone. Needs only the TensorRT headers (no libnvinfer).
#include <NvInferRuntime.h>
#include <dlfcn.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "check.h"

using namespace nvinfer1;

namespace {

class CaptureLogger : public ILogger {
public:
    void log(Severity severity, const char* msg) noexcept override {
        if (severity <= Severity::kERROR) last = msg;
    }
    std::string last;
};

class Finder : public ILoggerFinder {
public:
    ILogger* findLogger() override { return &logger; }
    CaptureLogger logger;
};

DynamicPluginTensorDesc desc(std::initializer_list<int64_t> dims, DataType type) {
    DynamicPluginTensorDesc d{};
    d.desc.dims.nbDims = static_cast<int32_t>(dims.size());
    int i = 0;
    for (int64_t v : dims) d.desc.dims.d[i++] = v;
    d.desc.type = type;
    d.desc.format = TensorFormat::kLINEAR;
    d.min = d.max = d.opt = d.desc.dims;
    return d;
}

}  // namespace

int main() {
    void* lib = dlopen(MDQE_TRT_PLUGIN_LIB, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        std::printf("FAIL: dlopen(%s): %s\n", MDQE_TRT_PLUGIN_LIB, dlerror());
        return 1;
    }
    using GetCreators = IPluginCreatorInterface* const* (*)(int32_t&);
    using SetLoggerFinder = void (*)(ILoggerFinder*);
    auto getCreators = reinterpret_cast<GetCreators>(dlsym(lib, "getCreators"));
    auto setLoggerFinder = reinterpret_cast<SetLoggerFinder>(dlsym(lib, "setLoggerFinder"));
    CHECK(getCreators != nullptr && setLoggerFinder != nullptr);
    if (!getCreators || !setLoggerFinder) return 1;
    Finder finder;
    setLoggerFinder(&finder);

    int32_t n = 0;
    IPluginCreatorInterface* const* creators = getCreators(n);
    CHECK(n == 1 && creators && creators[0]);
    CHECK(std::strcmp(creators[0]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0);
    auto* creator = static_cast<IPluginCreatorV3One*>(creators[0]);
    CHECK(std::strcmp(creator->getPluginName(), "MDQEMSDeformAttn") == 0);
    CHECK(std::strcmp(creator->getPluginVersion(), "1") == 0);
    CHECK(std::strcmp(creator->getPluginNamespace(), "mdqe") == 0);
    const PluginFieldCollection* names = creator->getFieldNames();
    CHECK(names->nbFields == 2 && std::strcmp(names->fields[0].name, "num_heads") == 0);

    // Creation as the ONNX parser does it (INT64 attribute), with the routing attributes present.
    const int32_t heads = 8;
    const int64_t head_dim = 32;
    const PluginField fields[3] = {PluginField("num_heads", &heads, PluginFieldType::kINT32, 1),
                                   PluginField("head_dim", &head_dim, PluginFieldType::kINT64, 1),
                                   PluginField("plugin_namespace", "mdqe", PluginFieldType::kCHAR, 5)};
    const PluginFieldCollection fc{3, fields};
    IPluginV3* plugin = creator->createPlugin("msda", &fc, TensorRTPhase::kBUILD);
    CHECK(plugin != nullptr);
    if (!plugin) return 1;
    CHECK(std::strcmp(plugin->getInterfaceInfo().kind, "PLUGIN") == 0);
    auto* core = static_cast<IPluginV3OneCore*>(plugin->getCapabilityInterface(PluginCapabilityType::kCORE));
    auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    CHECK(std::strcmp(core->getInterfaceInfo().kind, "PLUGIN_V3ONE_CORE") == 0);
    CHECK(std::strcmp(build->getInterfaceInfo().kind, "PLUGIN_V3ONE_BUILD") == 0);
    CHECK(std::strcmp(runtime->getInterfaceInfo().kind, "PLUGIN_V3ONE_RUNTIME") == 0);
    CHECK(std::strcmp(core->getPluginName(), "MDQEMSDeformAttn") == 0 &&
          std::strcmp(core->getPluginNamespace(), "mdqe") == 0);
    CHECK(build->getNbOutputs() == 1);

    // Output types follow value.
    const DataType in_types[5] = {DataType::kHALF, DataType::kINT32, DataType::kINT32, DataType::kHALF,
                                  DataType::kHALF};
    DataType out_type = DataType::kFLOAT;
    CHECK(build->getOutputDataTypes(&out_type, 1, in_types, 5) == 0 && out_type == DataType::kHALF);

    // Format combinations (decoder cross-attention shape: N=4, S=5100, M=8, D=32, Lq=196, L=4, P=4).
    for (DataType t : {DataType::kFLOAT, DataType::kHALF}) {
        DynamicPluginTensorDesc io[6] = {desc({4, 5100, 8, 32}, t),       desc({4, 2}, DataType::kINT32),
                                         desc({4}, DataType::kINT32),     desc({4, 196, 8, 4, 4, 2}, t),
                                         desc({4, 196, 8, 4, 4}, t),      desc({4, 196, 256}, t)};
        for (int pos = 0; pos < 6; ++pos) CHECK(build->supportsFormatCombination(pos, io, 5, 1));
        io[1].desc.type = DataType::kINT64;
        CHECK(!build->supportsFormatCombination(1, io, 5, 1));
        io[5].desc.format = TensorFormat::kHWC8;
        CHECK(!build->supportsFormatCombination(5, io, 5, 1));
    }
    DynamicPluginTensorDesc in[5] = {desc({-1, -1, 8, 32}, DataType::kFLOAT), desc({4, 2}, DataType::kINT32),
                                     desc({4}, DataType::kINT32), desc({-1, -1, 8, 4, 4, 2}, DataType::kFLOAT),
                                     desc({-1, -1, 8, 4, 4}, DataType::kFLOAT)};
    DynamicPluginTensorDesc out = desc({-1, -1, 256}, DataType::kFLOAT);
    CHECK(build->configurePlugin(in, 5, &out, 1) == 0);
    CHECK(build->getWorkspaceSize(in, 5, &out, 1) == 0);
    in[0] = desc({-1, -1, 8, 16}, DataType::kFLOAT);  // head_dim field says 32
    CHECK(build->configurePlugin(in, 5, &out, 1) != 0);
    CHECK(finder.logger.last.find("head_dim field says 32") != std::string::npos);

    PluginTensorDesc rt[5];
    for (int i = 0; i < 5; ++i) rt[i] = desc({}, DataType::kFLOAT).desc;
    rt[0].dims = Dims{4, {2, 100, 8, 32}};
    rt[1].dims = Dims{2, {2, 2}};
    rt[2].dims = Dims{1, {2}};
    rt[3].dims = Dims{6, {2, 7, 8, 2, 4, 2}};
    rt[4].dims = Dims{5, {2, 7, 8, 2, 4}};
    PluginTensorDesc rt_out = desc({2, 7, 256}, DataType::kFLOAT).desc;
    CHECK(runtime->onShapeChange(rt, 5, &rt_out, 1) == 0);
    rt[4].dims = Dims{5, {2, 7, 8, 2, 3}};
    CHECK(runtime->onShapeChange(rt, 5, &rt_out, 1) != 0);

    // Serialization round trip: fields -> new plugin (runtime phase) -> same fields.
    const PluginFieldCollection* ser = runtime->getFieldsToSerialize();
    CHECK(ser && ser->nbFields == 2);
    IPluginV3* restored = creator->createPlugin("msda", ser, TensorRTPhase::kRUNTIME);
    CHECK(restored != nullptr);
    if (restored) {
        auto* rrt = static_cast<IPluginV3OneRuntime*>(restored->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
        const PluginFieldCollection* ser2 = rrt->getFieldsToSerialize();
        CHECK(ser2->nbFields == 2);
        for (int i = 0; i < 2 && ser2->nbFields == 2; ++i) {
            CHECK(std::strcmp(ser2->fields[i].name, ser->fields[i].name) == 0);
            CHECK(ser2->fields[i].type == PluginFieldType::kINT32);
            CHECK(*static_cast<const int32_t*>(ser2->fields[i].data) == *static_cast<const int32_t*>(ser->fields[i].data));
        }
        CHECK(*static_cast<const int32_t*>(ser2->fields[0].data) == 8);
        CHECK(*static_cast<const int32_t*>(ser2->fields[1].data) == 32);
        delete restored;
    }
    IPluginV3* cloned = plugin->clone();
    IPluginV3* attached = runtime->attachToContext(nullptr);
    CHECK(cloned != nullptr && attached != nullptr && cloned != plugin);
    delete cloned;
    delete attached;

    // Bad fields are refused with a logged reason.
    const PluginField bad[1] = {PluginField("im2col_step", &heads, PluginFieldType::kINT32, 1)};
    const PluginFieldCollection bad_fc{1, bad};
    CHECK(creator->createPlugin("msda", &bad_fc, TensorRTPhase::kBUILD) == nullptr);
    CHECK(finder.logger.last.find("unknown field 'im2col_step'") != std::string::npos);

    delete plugin;
    setLoggerFinder(nullptr);
    return mdqe_test::finish("all plugin API checks passed");
}
