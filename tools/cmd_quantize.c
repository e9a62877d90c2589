/* vkpt quantize IN OUT TYPE: a GGUF file or a Hugging Face folder in, a GGUF
 * file out, with llama.cpp's quantization mixes. */
#include "cmd.h"
#include "vkpt/convert.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

int cmd_quantize(int argc, char **argv)
{
    static const struct option opts[] = {
        {"threads", required_argument, 0, 'j'}, {"help", no_argument, 0, 'h'}, {0}};
    int threads = 0, ch;
    while ((ch = getopt_long(argc, argv, "j:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'j': threads = atoi(optarg); break;
        case 'h':
            printf("usage: vkpt quantize [--threads N] IN OUT TYPE\n\n"
                   "IN is a .gguf file or a Hugging Face folder (config.json + safetensors);\n"
                   "OUT is the GGUF file to write. TYPE: %s.\n"
                   "Norms and biases stay F32; K-quant mixes give attn_v/ffn_down more bits in\n"
                   "some layers and output.weight Q6_K, as llama.cpp does; rows that do not\n"
                   "split into a type's blocks fall back to the next type that fits.\n",
                   vkpt_ftype_names());
            return 0;
        default: return 2;
        }
    }
    if (argc - optind != 3) {
        fprintf(stderr, "usage: vkpt quantize [--threads N] IN OUT TYPE (vkpt quantize --help)\n");
        return 2;
    }
    uint64_t t0 = vkpt_now_ns();
    int err = vkpt_quantize_file(argv[optind], argv[optind + 1], argv[optind + 2], threads, true);
    if (err) return tool_fail(err, "quantize");
    fprintf(stderr, "vkpt quantize: wrote %s in %.1f s\n", argv[optind + 1],
            (vkpt_now_ns() - t0) / 1e9);
    return 0;
}
