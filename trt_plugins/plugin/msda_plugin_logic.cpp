#include "msda_plugin_logic.h"

#include <cstring>

namespace mdqe {
namespace plugin {

bool supportsFormat(int32_t pos, const IoFormat* inOut, int32_t nbInputs, int32_t nbOutputs) {
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs || pos < 0 || pos >= kNbInputs + kNbOutputs) return false;
    const IoFormat& t = inOut[pos];
    if (!t.linear) return false;
    switch (pos) {
        case kValue: return t.type == DType::kFloat || t.type == DType::kHalf;
        case kSpatialShapes:
        case kLevelStartIndex: return t.type == DType::kInt32;
        default: return t.type == inOut[kValue].type;
    }
}

namespace {

bool readInt(const FieldView& f, int32_t& out, std::string& err) {
    if (f.length != 1 || f.data == nullptr) {
        err = std::string("field '") + f.name + "' must hold one integer, got length " + std::to_string(f.length);
        return false;
    }
    int64_t v = 0;
    if (f.type == FieldType::kInt32) {
        v = *static_cast<const int32_t*>(f.data);
    } else if (f.type == FieldType::kInt64) {
        v = *static_cast<const int64_t*>(f.data);
    } else {
        err = std::string("field '") + f.name + "' must be INT32 or INT64";
        return false;
    }
    if (v < 0 || v > (int64_t(1) << 30)) {
        err = std::string("field '") + f.name + "' = " + std::to_string(v) + " is out of range (0 = from the input shape)";
        return false;
    }
    out = static_cast<int32_t>(v);
    return true;
}

}  // namespace

std::string decodeFields(const FieldView* fields, int32_t nbFields, Fields& out) {
    Fields result;
    std::string err;
    if (nbFields > 0 && fields == nullptr) return "field list is NULL";
    for (int32_t i = 0; i < nbFields; ++i) {
        const FieldView& f = fields[i];
        if (f.name == nullptr) return "field " + std::to_string(i) + " has no name";
        if (std::strcmp(f.name, kFieldNumHeads) == 0) {
            if (!readInt(f, result.num_heads, err)) return err;
        } else if (std::strcmp(f.name, kFieldHeadDim) == 0) {
            if (!readInt(f, result.head_dim, err)) return err;
        } else if (std::strcmp(f.name, "plugin_version") == 0 || std::strcmp(f.name, "plugin_namespace") == 0) {
            continue;
        } else {
            return std::string("unknown field '") + f.name + "' (known: num_heads, head_dim)";
        }
    }
    out = result;
    return "";
}

void encodeFields(const Fields& fields, FieldView (&views)[kNbFields]) {
    views[0] = FieldView{kFieldNumHeads, &fields.num_heads, FieldType::kInt32, 1};
    views[1] = FieldView{kFieldHeadDim, &fields.head_dim, FieldType::kInt32, 1};
}

namespace {

const char* kInputNames[kNbInputs] = {"value", "spatial_shapes", "level_start_index", "sampling_locations",
                                      "attention_weights"};

bool known(int64_t d) { return d >= 0; }

// a and b agree unless both are known and differ.
bool agree(int64_t a, int64_t b) { return !known(a) || !known(b) || a == b; }

std::string dims(const Shape& s) {
    std::string r = "[";
    for (int32_t i = 0; i < s.nbDims; ++i) r += (i ? "," : "") + std::to_string(s.d[i]);
    return r + "]";
}

}  // namespace

std::string checkInputShapes(const Shape* in, int32_t nbInputs, const Fields& fields) {
    if (nbInputs != kNbInputs) {
        return "MDQEMSDeformAttn takes 5 inputs (value, spatial_shapes, level_start_index, sampling_locations, "
               "attention_weights), got " + std::to_string(nbInputs);
    }
    const int32_t ranks[kNbInputs] = {4, 2, 1, 6, 5};
    for (int32_t i = 0; i < kNbInputs; ++i) {
        if (in[i].nbDims != ranks[i]) {
            return std::string(kInputNames[i]) + " must have rank " + std::to_string(ranks[i]) + ", got " + dims(in[i]);
        }
    }
    const Shape &v = in[kValue], &ss = in[kSpatialShapes], &ls = in[kLevelStartIndex], &loc = in[kSamplingLocations],
                &w = in[kAttentionWeights];
    if (!agree(ss.d[1], 2)) return "spatial_shapes must be [L,2], got " + dims(ss);
    if (!agree(ls.d[0], ss.d[0])) return "level_start_index " + dims(ls) + " must be [L] with spatial_shapes " + dims(ss);
    if (!agree(loc.d[5], 2)) return "sampling_locations must end in 2 (x, y), got " + dims(loc);
    if (!agree(loc.d[0], v.d[0]) || !agree(loc.d[2], v.d[2]) || !agree(loc.d[3], ss.d[0])) {
        return "sampling_locations " + dims(loc) + " must be [N,Lq,M,L,P,2] with value " + dims(v) +
               " and spatial_shapes " + dims(ss);
    }
    for (int32_t i = 0; i < 5; ++i) {
        if (!agree(w.d[i], loc.d[i])) {
            return "attention_weights " + dims(w) + " must equal sampling_locations " + dims(loc) +
                   " without its last axis";
        }
    }
    if (fields.num_heads > 0 && !agree(v.d[2], fields.num_heads)) {
        return "value " + dims(v) + " has M = " + std::to_string(v.d[2]) + " heads but the num_heads field says " +
               std::to_string(fields.num_heads);
    }
    if (fields.head_dim > 0 && !agree(v.d[3], fields.head_dim)) {
        return "value " + dims(v) + " has D = " + std::to_string(v.d[3]) + " but the head_dim field says " +
               std::to_string(fields.head_dim);
    }
    return "";
}

Shape outputShape(const Shape& value, const Shape& loc) {
    Shape out{3, {value.d[0], loc.d[1], -1}};
    if (known(value.d[2]) && known(value.d[3])) out.d[2] = value.d[2] * value.d[3];
    if (!known(out.d[0])) out.d[0] = known(loc.d[0]) ? loc.d[0] : -1;
    return out;
}

size_t workspaceSize() { return 0; }

}  // namespace plugin
}  // namespace mdqe
