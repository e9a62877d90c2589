/* Shared prelude of every vkpt shader: the GLSL version, includes and the
 * push-constant struct definitions. Each shader begins with
 *   #version 450
 *   #extension GL_GOOGLE_include_directive : require
 *   #include "base.glsl"
 */
#define VKPT_GLSL 1
#include "pc.h"
