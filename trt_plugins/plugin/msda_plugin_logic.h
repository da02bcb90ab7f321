// TensorRT-free logic of the MDQEMSDeformAttn plugin: identity, I/O rules, fields, shapes.
// Built and unit-tested by CI without TensorRT (trt_plugins/tests/test_msda_plugin_logic.cpp);
// msda_plugin.cpp maps TensorRT's types onto these.
#ifndef MDQE_MSDA_PLUGIN_LOGIC_H
#define MDQE_MSDA_PLUGIN_LOGIC_H

#include <cstddef>
#include <cstdint>
#include <string>

namespace mdqe {
namespace plugin {

constexpr char kPluginName[] = "MDQEMSDeformAttn";
constexpr char kPluginVersion[] = "1";
constexpr char kPluginNamespace[] = "mdqe";

// Inputs in order, then the output (positions as TensorRT numbers them).
enum Position : int32_t {
    kValue = 0,              // [N, S, M, D]         float / half
    kSpatialShapes = 1,      // [L, 2]               int32
    kLevelStartIndex = 2,    // [L]                  int32
    kSamplingLocations = 3,  // [N, Lq, M, L, P, 2]  value's type
    kAttentionWeights = 4,   // [N, Lq, M, L, P]     value's type
    kOutput = 5              // [N, Lq, M * D]       value's type
};
constexpr int32_t kNbInputs = 5;
constexpr int32_t kNbOutputs = 1;

enum class DType { kFloat, kHalf, kInt32, kOther };

struct IoFormat {
    DType type;
    bool linear;
};

// supportsFormatCombination: may position `pos` have inOut[pos], given inOut[0..pos-1]?
// Rules: everything linear; value float or half; shape inputs int32; the rest share value's type.
bool supportsFormat(int32_t pos, const IoFormat* inOut, int32_t nbInputs, int32_t nbOutputs);

// Plugin fields (all optional int32; ONNX attributes of the node become these fields).
//   num_heads  M expected by the graph (0 = take it from value's shape)
//   head_dim   D expected by the graph (0 = take it from value's shape)
// A non-zero field is checked against the input shape when the engine is built.
constexpr char kFieldNumHeads[] = "num_heads";
constexpr char kFieldHeadDim[] = "head_dim";
constexpr int32_t kNbFields = 2;

struct Fields {
    int32_t num_heads = 0;
    int32_t head_dim = 0;
};

enum class FieldType { kInt32, kInt64, kChar, kOther };

struct FieldView {
    const char* name;
    const void* data;
    FieldType type;
    int32_t length;
};

// Decode fields (creator, deserialization). Unknown names are errors, except "plugin_version" and
// "plugin_namespace" (routing attributes of the ONNX node). Returns "" or the error message.
std::string decodeFields(const FieldView* fields, int32_t nbFields, Fields& out);

// The fields to serialize, pointing into `fields` (which must outlive the views).
void encodeFields(const Fields& fields, FieldView (&views)[kNbFields]);

// Shapes with -1 for dimensions unknown at build time.
struct Shape {
    int32_t nbDims;
    int64_t d[8];
};

// Check ranks and agreement of the input shapes (and the fields). Returns "" or the message.
std::string checkInputShapes(const Shape* inputs, int32_t nbInputs, const Fields& fields);

// Output shape [N, Lq, M*D] from value and sampling_locations (-1 where unknown).
Shape outputShape(const Shape& value, const Shape& samplingLocations);

// Workspace bytes for the CUDA kernel: none.
size_t workspaceSize();

}  // namespace plugin
}  // namespace mdqe

#endif  // MDQE_MSDA_PLUGIN_LOGIC_H
