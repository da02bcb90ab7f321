#include "msda_plugin.h"

#include <atomic>
#include <cstdio>
#include <exception>

#include "mdqe_msda/msda_cuda.h"

namespace mdqe {
namespace plugin {

using namespace nvinfer1;

namespace {

std::atomic<ILoggerFinder*> g_loggerFinder{nullptr};

DType toDType(DataType t) {
    switch (t) {
        case DataType::kFLOAT: return DType::kFloat;
        case DataType::kHALF: return DType::kHalf;
        case DataType::kINT32: return DType::kInt32;
        default: return DType::kOther;
    }
}

Shape toShape(const Dims& d) {
    Shape s{};
    s.nbDims = d.nbDims;
    for (int32_t i = 0; i < d.nbDims && i < 8; ++i) s.d[i] = d.d[i];
    return s;
}

FieldType toFieldType(PluginFieldType t) {
    switch (t) {
        case PluginFieldType::kINT32: return FieldType::kInt32;
        case PluginFieldType::kINT64: return FieldType::kInt64;
        case PluginFieldType::kCHAR: return FieldType::kChar;
        default: return FieldType::kOther;
    }
}

}  // namespace

void setLoggerFinder(ILoggerFinder* finder) { g_loggerFinder.store(finder); }

void logError(const std::string& message) {
    const std::string text = std::string(kPluginNamespace) + "::" + kPluginName + ": " + message;
    ILoggerFinder* finder = g_loggerFinder.load();
    ILogger* logger = finder ? finder->findLogger() : nullptr;
    if (logger) {
        logger->log(ILogger::Severity::kERROR, text.c_str());
    } else {
        std::fprintf(stderr, "[E] %s\n", text.c_str());
    }
}

// ------------------------------------------------------------------------------ MsdaPlugin
MsdaPlugin::MsdaPlugin(const Fields& fields) : mFields(fields) {}

MsdaPlugin::MsdaPlugin(const MsdaPlugin& other)
    : IPluginV3(other), IPluginV3OneCore(other), IPluginV3OneBuild(other), IPluginV3OneRuntime(other),
      mFields(other.mFields) {}

IPluginCapability* MsdaPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept {
    switch (type) {
        case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
        case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
        case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

IPluginV3* MsdaPlugin::clone() noexcept {
    try {
        return new MsdaPlugin(*this);
    } catch (const std::exception& e) {
        logError(std::string("clone failed: ") + e.what());
        return nullptr;
    }
}

int32_t MsdaPlugin::configurePlugin(const DynamicPluginTensorDesc* in, int32_t nbInputs,
                                    const DynamicPluginTensorDesc* out, int32_t nbOutputs) noexcept {
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs) {
        logError("expects 5 inputs and 1 output");
        return -1;
    }
    Shape shapes[kNbInputs];
    for (int32_t i = 0; i < kNbInputs; ++i) shapes[i] = toShape(in[i].desc.dims);
    const std::string err = checkInputShapes(shapes, nbInputs, mFields);
    if (!err.empty()) {
        logError(err);
        return -1;
    }
    return 0;
}

int32_t MsdaPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, const DataType* inputTypes,
                                       int32_t nbInputs) const noexcept {
    if (nbOutputs != kNbOutputs || nbInputs != kNbInputs) return -1;
    if (inputTypes[kValue] != DataType::kFLOAT && inputTypes[kValue] != DataType::kHALF) {
        logError("value must be FP32 or FP16");
        return -1;
    }
    outputTypes[0] = inputTypes[kValue];
    return 0;
}

int32_t MsdaPlugin::getOutputShapes(const DimsExprs* inputs, int32_t nbInputs, const DimsExprs* /*shapeInputs*/,
                                    int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs,
                                    IExprBuilder& exprBuilder) noexcept {
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs || inputs[kValue].nbDims != 4 ||
        inputs[kSamplingLocations].nbDims != 6) {
        logError("getOutputShapes: expected value [N,S,M,D] and sampling_locations [N,Lq,M,L,P,2]");
        return -1;
    }
    // [N, Lq, M*D]: the rule of outputShape() in msda_plugin_logic.cpp, as dimension expressions.
    outputs[0].nbDims = 3;
    outputs[0].d[0] = inputs[kValue].d[0];
    outputs[0].d[1] = inputs[kSamplingLocations].d[1];
    outputs[0].d[2] = exprBuilder.operation(DimensionOperation::kPROD, *inputs[kValue].d[2], *inputs[kValue].d[3]);
    return 0;
}

bool MsdaPlugin::supportsFormatCombination(int32_t pos, const DynamicPluginTensorDesc* inOut, int32_t nbInputs,
                                           int32_t nbOutputs) noexcept {
    if (pos < 0 || pos >= kNbInputs + kNbOutputs || nbInputs + nbOutputs != kNbInputs + kNbOutputs) return false;
    IoFormat formats[kNbInputs + kNbOutputs];
    for (int32_t i = 0; i <= pos; ++i) {
        formats[i] = IoFormat{toDType(inOut[i].desc.type), inOut[i].desc.format == TensorFormat::kLINEAR};
    }
    return supportsFormat(pos, formats, nbInputs, nbOutputs);
}

size_t MsdaPlugin::getWorkspaceSize(const DynamicPluginTensorDesc*, int32_t, const DynamicPluginTensorDesc*,
                                    int32_t) const noexcept {
    return workspaceSize();
}

int32_t MsdaPlugin::onShapeChange(const PluginTensorDesc* in, int32_t nbInputs, const PluginTensorDesc* out,
                                  int32_t nbOutputs) noexcept {
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs) return -1;
    Shape shapes[kNbInputs];
    for (int32_t i = 0; i < kNbInputs; ++i) shapes[i] = toShape(in[i].dims);
    const std::string err = checkInputShapes(shapes, nbInputs, mFields);
    if (!err.empty()) {
        logError(err);
        return -1;
    }
    return 0;
}

int32_t MsdaPlugin::enqueue(const PluginTensorDesc* inputDesc, const PluginTensorDesc* /*outputDesc*/,
                            const void* const* inputs, void* const* outputs, void* /*workspace*/,
                            cudaStream_t stream) noexcept {
    const Dims& v = inputDesc[kValue].dims;
    const Dims& loc = inputDesc[kSamplingLocations].dims;
    const MsdaCudaType type =
        inputDesc[kValue].type == DataType::kHALF ? MsdaCudaType::kFloat16 : MsdaCudaType::kFloat32;
    const cudaError_t status = msda_cuda_forward(
        type, inputs[kValue], static_cast<const int32_t*>(inputs[kSpatialShapes]),
        static_cast<const int32_t*>(inputs[kLevelStartIndex]), inputs[kSamplingLocations], inputs[kAttentionWeights],
        v.d[0], v.d[1], v.d[2], v.d[3], loc.d[3], loc.d[1], loc.d[4], outputs[0], stream);
    if (status != cudaSuccess) {
        logError(std::string("CUDA kernel launch failed: ") + cudaGetErrorString(status));
        return -1;
    }
    return 0;
}

IPluginV3* MsdaPlugin::attachToContext(IPluginResourceContext* /*context*/) noexcept { return clone(); }

const PluginFieldCollection* MsdaPlugin::getFieldsToSerialize() noexcept {
    FieldView views[kNbFields];
    encodeFields(mFields, views);
    mSerialized.clear();
    for (const FieldView& f : views) {
        mSerialized.emplace_back(f.name, f.data, PluginFieldType::kINT32, f.length);
    }
    mSerializedCollection.nbFields = static_cast<int32_t>(mSerialized.size());
    mSerializedCollection.fields = mSerialized.data();
    return &mSerializedCollection;
}

// ------------------------------------------------------------------------------ creator
MsdaPluginCreator::MsdaPluginCreator() {
    mFieldNames.emplace_back(kFieldNumHeads, nullptr, PluginFieldType::kINT32, 1);
    mFieldNames.emplace_back(kFieldHeadDim, nullptr, PluginFieldType::kINT32, 1);
    mFieldCollection.nbFields = static_cast<int32_t>(mFieldNames.size());
    mFieldCollection.fields = mFieldNames.data();
}

IPluginV3* MsdaPluginCreator::createPlugin(const char* /*name*/, const PluginFieldCollection* fc,
                                           TensorRTPhase /*phase*/) noexcept {
    try {
        std::vector<FieldView> views;
        if (fc != nullptr) {
            for (int32_t i = 0; i < fc->nbFields; ++i) {
                const PluginField& f = fc->fields[i];
                views.push_back(FieldView{f.name, f.data, toFieldType(f.type), f.length});
            }
        }
        Fields fields;
        const std::string err = decodeFields(views.data(), static_cast<int32_t>(views.size()), fields);
        if (!err.empty()) {
            logError(err);
            return nullptr;
        }
        return new MsdaPlugin(fields);
    } catch (const std::exception& e) {
        logError(std::string("createPlugin failed: ") + e.what());
        return nullptr;
    }
}

}  // namespace plugin
}  // namespace mdqe
