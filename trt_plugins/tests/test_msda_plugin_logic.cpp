// Tests of the TensorRT-free plugin logic (no TensorRT needed): format rules, fields, shapes.
#include <cstdio>
#include <cstring>
#include <string>

#include "msda_plugin_logic.h"

#include "check.h"

using namespace mdqe::plugin;

namespace {

bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

void test_identity() {
    CHECK(std::strcmp(kPluginName, "MDQEMSDeformAttn") == 0);
    CHECK(std::strcmp(kPluginVersion, "1") == 0);
    CHECK(std::strcmp(kPluginNamespace, "mdqe") == 0);
}

void test_formats() {
    const IoFormat f{DType::kFloat, true}, h{DType::kHalf, true}, i{DType::kInt32, true};
    const IoFormat f_nonlinear{DType::kFloat, false}, other{DType::kOther, true};
    for (const IoFormat& v : {f, h}) {
        const IoFormat ok[6] = {v, i, i, v, v, v};
        for (int pos = 0; pos < 6; ++pos) CHECK(supportsFormat(pos, ok, 5, 1));
    }
    const IoFormat mixed[6] = {f, i, i, h, f, f};
    CHECK(!supportsFormat(3, mixed, 5, 1));  // locations must follow value's type
    const IoFormat int_value[1] = {i};
    CHECK(!supportsFormat(0, int_value, 5, 1));
    const IoFormat other_value[1] = {other};
    CHECK(!supportsFormat(0, other_value, 5, 1));
    const IoFormat float_shapes[2] = {f, f};
    CHECK(!supportsFormat(1, float_shapes, 5, 1));  // shapes are INT32
    const IoFormat nonlinear[1] = {f_nonlinear};
    CHECK(!supportsFormat(0, nonlinear, 5, 1));
    const IoFormat ok[6] = {f, i, i, f, f, f};
    CHECK(!supportsFormat(6, ok, 5, 1));
    CHECK(!supportsFormat(0, ok, 4, 1));
    const IoFormat half_out[6] = {f, i, i, f, f, h};
    CHECK(!supportsFormat(5, half_out, 5, 1));
}

void test_fields_round_trip() {
    Fields in;
    in.num_heads = 8;
    in.head_dim = 32;
    FieldView views[kNbFields];
    encodeFields(in, views);
    CHECK(std::strcmp(views[0].name, "num_heads") == 0 && views[0].type == FieldType::kInt32);
    Fields out;
    CHECK(decodeFields(views, kNbFields, out).empty());
    CHECK(out.num_heads == 8 && out.head_dim == 32);
}

void test_fields_decode() {
    Fields out;
    CHECK(decodeFields(nullptr, 0, out).empty() && out.num_heads == 0 && out.head_dim == 0);
    const int64_t heads64 = 4;
    const char* version = "1";
    const FieldView onnx_like[2] = {{"num_heads", &heads64, FieldType::kInt64, 1},
                                    {"plugin_version", version, FieldType::kChar, 2}};
    CHECK(decodeFields(onnx_like, 2, out).empty() && out.num_heads == 4);
    const int32_t x = 3;
    const FieldView unknown[1] = {{"im2col_step", &x, FieldType::kInt32, 1}};
    CHECK(contains(decodeFields(unknown, 1, out), "unknown field 'im2col_step'"));
    const FieldView wrong_type[1] = {{"head_dim", version, FieldType::kChar, 2}};
    CHECK(contains(decodeFields(wrong_type, 1, out), "must hold one integer"));
    const float fl = 1.0f;
    const FieldView float_field[1] = {{"head_dim", &fl, FieldType::kOther, 1}};
    CHECK(contains(decodeFields(float_field, 1, out), "INT32 or INT64"));
    const int32_t negative = -2;
    const FieldView neg[1] = {{"head_dim", &negative, FieldType::kInt32, 1}};
    CHECK(contains(decodeFields(neg, 1, out), "out of range"));
    CHECK(out.num_heads == 4);  // failed decodes leave the output untouched
}

Shape shape(std::initializer_list<int64_t> d) {
    Shape s{};
    s.nbDims = static_cast<int32_t>(d.size());
    int i = 0;
    for (int64_t v : d) s.d[i++] = v;
    return s;
}

void test_shapes() {
    // Encoder-like: N=1, S=5100, M=8, D=32, L=4, Lq=5100, P=4; and dynamic N/S/Lq (-1).
    Shape in[5] = {shape({1, 5100, 8, 32}), shape({4, 2}), shape({4}), shape({1, 5100, 8, 4, 4, 2}),
                   shape({1, 5100, 8, 4, 4})};
    Fields none;
    CHECK(checkInputShapes(in, 5, none).empty());
    Shape out = outputShape(in[0], in[3]);
    CHECK(out.nbDims == 3 && out.d[0] == 1 && out.d[1] == 5100 && out.d[2] == 256);
    Shape dyn[5] = {shape({-1, -1, 8, 32}), shape({4, 2}), shape({4}), shape({-1, -1, 8, 4, 4, 2}),
                    shape({-1, -1, 8, 4, 4})};
    CHECK(checkInputShapes(dyn, 5, none).empty());
    out = outputShape(dyn[0], dyn[3]);
    CHECK(out.d[0] == -1 && out.d[1] == -1 && out.d[2] == 256);
    Fields f;
    f.num_heads = 8;
    f.head_dim = 32;
    CHECK(checkInputShapes(in, 5, f).empty());
    f.head_dim = 16;
    CHECK(contains(checkInputShapes(in, 5, f), "head_dim field says 16"));

    Shape bad[5];
    for (int i = 0; i < 5; ++i) bad[i] = in[i];
    bad[3] = shape({1, 5100, 8, 3, 4, 2});  // L disagrees with spatial_shapes
    CHECK(contains(checkInputShapes(bad, 5, none), "sampling_locations"));
    bad[3] = in[3];
    bad[4] = shape({1, 5100, 8, 4, 3});  // P disagrees
    CHECK(contains(checkInputShapes(bad, 5, none), "attention_weights"));
    bad[4] = in[4];
    bad[2] = shape({3});
    CHECK(contains(checkInputShapes(bad, 5, none), "level_start_index"));
    bad[2] = in[2];
    bad[0] = shape({1, 5100, 256});
    CHECK(contains(checkInputShapes(bad, 5, none), "value must have rank 4"));
    bad[0] = in[0];
    bad[1] = shape({4, 3});
    CHECK(contains(checkInputShapes(bad, 5, none), "spatial_shapes must be [L,2]"));
    CHECK(contains(checkInputShapes(in, 4, none), "takes 5 inputs"));
    CHECK(workspaceSize() == 0);
}

}  // namespace

int main() {
    test_identity();
    test_formats();
    test_fields_round_trip();
    test_fields_decode();
    test_shapes();
    return mdqe_test::finish("all plugin logic checks passed");
}
