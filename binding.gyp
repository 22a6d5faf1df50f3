{
  "variables": {
    "rustasr_dev%": "<!(node -p \"process.env.RUSTASR_DEV === '0' ? 0 : 1\")",
    "rustasr_metal%": "<!(node -p \"process.env.RUSTASR_METAL === '1' ? 1 : 0\")"
  },
  "targets": [
    {
      "target_name": "rustasr",
      "sources": [
        "native/addon/addon.cpp",
        "native/src/util/json.cpp",
        "native/src/util/tensor.cpp",
        "native/src/util/error.cpp",
        "native/src/io/safetensors.cpp",
        "native/src/io/large_pages.cpp",
        "native/src/io/int8_cache.cpp",
        "native/src/io/config.cpp",
        "native/src/io/file.cpp",
        "native/src/io/preprocessor.cpp",
        "native/src/audio/mel.cpp",
        "native/src/model/weights.cpp",
        "native/src/model/int8.cpp",
        "native/src/model/residency.cpp",
        "native/src/model/model.cpp",
        "native/src/model/encoder.cpp",
        "native/src/model/decoder.cpp",
        "native/src/model/session.cpp",
        "native/src/model/batch.cpp",
        "native/src/model/aligner.cpp",
        "native/src/backend/select.cpp",
        "native/src/backend/cuda_loader.cpp",
        "native/src/backend/cpu/cpu_backend.cpp",
        "native/src/backend/cpu/threadpool.cpp",
        "native/src/backend/cpu/isa.cpp",
        "native/src/backend/cpu/gemv.cpp",
        "native/src/backend/cpu/vecops.cpp",
        "native/src/backend/cpu/attention.cpp",
        "native/src/backend/cpu/gemm.cpp",
        "native/src/backend/cpu/kernels.cpp",
        "native/src/backend/cpu/quantize.cpp"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "native/include",
        "native/src"
      ],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-Wall", "-Wextra", "-fvisibility=hidden"],
      "conditions": [
        ["rustasr_dev==1", {
          "sources": ["native/addon/dev.cpp", "native/src/backend/cpu/probe.cpp"],
          "defines": ["RUSTASR_DEV=1"]
        }],
        ["OS=='linux' and target_arch=='x64'", {
          "defines": ["RUSTASR_HAVE_CBLAS=1"],
          "include_dirs": ["/usr/include/x86_64-linux-gnu/openblas-pthread"],
          "libraries": [
            "-Wl,--exclude-libs,ALL",
            "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.a",
            "-lpthread", "-lm", "-ldl"
          ]
        }],
        ["OS=='linux' and target_arch=='arm64'", {
          "defines": ["RUSTASR_HAVE_CBLAS=1"],
          "include_dirs": ["/usr/include/aarch64-linux-gnu/openblas-pthread"],
          "libraries": [
            "-Wl,--exclude-libs,ALL",
            "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.a",
            "-lpthread", "-lm", "-ldl"
          ]
        }],
        ["OS=='mac'", {
          "defines": ["RUSTASR_HAVE_ACCELERATE=1", "ACCELERATE_NEW_LAPACK=1"],
          "libraries": ["-framework Accelerate"],
          "xcode_settings": {
            "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
            "CLANG_ENABLE_OBJC_ARC": "YES",
            "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
            "MACOSX_DEPLOYMENT_TARGET": "13.0",
            "OTHER_CPLUSPLUSFLAGS": ["-O3", "-Wall", "-Wextra"]
          }
        }],
        ["OS=='mac' and rustasr_metal==1", {
          "sources": ["native/src/backend/metal/metal_backend.mm"],
          "defines": ["RUSTASR_HAVE_METAL=1"],
          "libraries": ["-framework Metal", "-framework Foundation"]
        }]
      ]
    }
  ]
}
